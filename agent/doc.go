// Package agent is the node agent: it registers its Node with the API,
// keeps the Node's status and heartbeat current, and runs the Instances
// bound to the node as containers through the runtime's Go API (no CLI
// process and no helper process per container).
//
// Each Instance gets a supervisor, a small state machine driven by the
// Instance's desired state (SwarmKit's controller steps):
//
//	Prepare   resolve the image (the built-in one, one in the store, or a
//	          pull, with progress in the status), the Secrets its
//	          environment names, and a bundle (image.Store.Prepare)
//	Start     create the container with its output going to the
//	          Instance's log pipes, attach it to the node's network, start
//	          it
//	Wait      until it exits, running readiness and liveness probes
//	Shutdown  SIGTERM, then SIGKILL after the grace period
//	Remove    delete the container, detach it, release the bundle
//
// An exited container is started again as its restart policy says
// (always, on-failure, never), after an exponential back-off (1 s doubling,
// capped at 5 minutes, reset after 10 minutes of running). Every step is
// reported in the Instance's status.
//
// Containers outlive the agent: their output goes to named pipes that
// wait for the next agent (logs.go), their exit statuses are kept by the
// kernel (runtime.Config.Exits), and a restarted agent adopts the
// containers whose Instance is still bound to it and removes the others.
// Logs serves an Instance's log and Exec runs a process in its container
// (exec.go), as the API asks for them (api.NodeConn). Container IDs are
// "nx-" + the Instance's UID.
package agent
