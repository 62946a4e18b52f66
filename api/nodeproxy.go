package api

import (
	"net/http"

	"nexus.dev/nexus/api/types"
)

// instanceNode finds the instance a request names (.../instances/{name}/…)
// and the connection to the agent of its node, for the routes that only
// that agent can serve (an instance's log, exec): the agent in this
// process (Nodes), or else the endpoint of the agent on its own machine
// (ServeNode), once it answers. It says why there is none: 404 for no
// such instance, 409 for one not scheduled to a node yet, 503 (retry in
// 5 s) for a node whose agent cannot be reached from this server.
func (s *Server) instanceNode(r *request) (*types.Instance, NodeConn, error) {
	o, _, err := s.current(r.http.Context(), instancesRes, r.namespace, r.name)
	if err != nil {
		return nil, nil, err
	}
	inst := o.(*types.Instance)
	node := inst.Spec.NodeName
	if node == "" {
		return nil, nil, problem(http.StatusConflict, "Conflict", "instance %s/%s is not scheduled yet: no node runs it (nexus describe instance %s -n %s says why it waits)",
			r.namespace, r.name, r.name, r.namespace)
	}
	conn, ok := s.nodes.Get(node)
	if !ok {
		var err error
		if conn, err = s.remote(r.http.Context(), node); err == nil {
			return inst, conn, nil
		}
		p := problem(http.StatusServiceUnavailable, "Unavailable", "node %s's agent is not connected to this server, and instance %s/%s runs there: check the node (nexus get node %s) and try again (%v)",
			node, r.namespace, r.name, node, err).withRetry(5)
		// The problem is the node, not the instance (nor this server's
		// store, which a 503 is otherwise about).
		p.Kind, p.Name = "Node", node
		return nil, nil, p
	}
	return inst, conn, nil
}
