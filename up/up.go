// Package up assembles `nexus up`: a control-plane server (its store, API,
// controllers and scheduler; package server) and, in the same process, the
// node agent with the OCI runtime, the image store, the exit recorder and
// the node's container networking (package agent/embed, which `nexus
// agent` runs alone), so that one command gives a working single-machine
// orchestrator. Tests start one with Start as the command does.
//
// The data directory holds the server's files (see package server) and,
// beside them, the agent's (see package agent/embed).
package up

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"nexus.dev/nexus/agent"
	"nexus.dev/nexus/agent/embed"
	"nexus.dev/nexus/api"
	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/internal/lifetime"
	"nexus.dev/nexus/networking"
	"nexus.dev/nexus/networking/lb"
	"nexus.dev/nexus/server"
)

// Config is what `nexus up` needs. Server.DataDir is required.
type Config struct {
	Server server.Config
	// NodeName is this machine's Node (default: the server's name).
	NodeName string
	// Labels are the Node's labels when it is first registered.
	Labels map[string]string
	// Bridge names the node's bridge (networking.DefaultBridge when empty).
	Bridge string
	// NetworkMode is how containers reach other nodes' containers
	// (networking.ModeAuto when empty).
	NetworkMode networking.Mode
	// ServiceDataPath is how the node balances Service traffic (lb.Auto
	// when empty).
	ServiceDataPath lb.Choice
	// ExitRecorderDir is where the exit recorder is pinned in bpffs
	// (exitrec.DefaultDir when empty).
	ExitRecorderDir string
	// HeartbeatInterval of the Node (agent.DefaultHeartbeatInterval when 0).
	HeartbeatInterval time.Duration
	// BuiltinExe is the program the built-in image is made from (default:
	// this process's executable).
	BuiltinExe string
	Logger     *slog.Logger
}

var _ api.NodeConn = (*agent.Agent)(nil)

// Node is a running `nexus up`: a server and an agent.
type Node struct {
	cfg    Config
	log    *slog.Logger
	srv    *server.Server
	agent  *embed.Agent
	client *client.Client

	unregister func() // takes the agent out of the API's nodes
	life       *lifetime.Lifetime
}

// Start starts the server, then the agent of this machine's node, and
// returns once the API answers and the agent runs.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Server.Logger = cfg.Logger
	srv, err := server.Start(ctx, cfg.Server)
	if err != nil {
		return nil, err
	}
	if cfg.NodeName == "" {
		cfg.NodeName = srv.Name()
	}
	u := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeName), srv: srv}
	u.life = lifetime.New(u.shutdown)
	defer func() {
		if err != nil {
			u.Stop()
		}
	}()
	if err := u.startAgent(ctx); err != nil {
		return nil, err
	}
	return u, nil
}

func (u *Node) startAgent(ctx context.Context) error {
	cfg := u.cfg
	creds, err := u.srv.NodeCredentials(cfg.NodeName)
	if err != nil {
		return fmt.Errorf("the agent's credentials: %w", err)
	}
	if u.client, err = u.srv.LocalClient(creds, "nexus-agent"); err != nil {
		return fmt.Errorf("the agent's API client: %w", err)
	}
	u.agent, err = embed.Start(ctx, embed.Config{NodeName: cfg.NodeName, DataDir: cfg.Server.DataDir, Client: u.client,
		Bridge: cfg.Bridge, NetworkMode: cfg.NetworkMode, ServiceDataPath: cfg.ServiceDataPath, ExitRecorderDir: cfg.ExitRecorderDir, Labels: cfg.Labels,
		HeartbeatInterval: cfg.HeartbeatInterval, BuiltinExe: cfg.BuiltinExe, Logger: cfg.Logger,
		CertificateExpiry: func() time.Time { return creds.Leaf().NotAfter },
		// The instances' metrics are served on the API's /metrics.
		Metrics: u.srv.API().Registry()})
	if err != nil {
		return err
	}
	// The API reaches the agent in this process for logs and exec.
	u.unregister = u.srv.API().Nodes().Register(cfg.NodeName, u.agent.Agent())
	go func() {
		select {
		case <-u.srv.Done():
			if err := u.srv.Err(); err != nil {
				u.fail(err)
			}
		case <-u.agent.Done():
			if err := u.agent.Err(); err != nil {
				u.fail(err)
			}
		}
	}()
	return nil
}

func (u *Node) fail(err error) { u.life.Fail(u.log, "stopping", err) }

// Server is the control-plane server.
func (u *Node) Server() *server.Server { return u.srv }

// NodeName is this machine's node.
func (u *Node) NodeName() string { return u.cfg.NodeName }

// ExitsRecorded says whether the eBPF exit recorder runs, so a container
// that exits while nexus is down has its exit status known.
func (u *Node) ExitsRecorded() bool { return u.agent.ExitsRecorded() }

// Done is closed once the node has stopped.
func (u *Node) Done() <-chan struct{} { return u.life.Done() }

// Err is why the node stopped on its own (nil after Stop).
func (u *Node) Err() error { return u.life.Err() }

// Stop stops the agent (its containers keep running, for the next start
// to adopt) and the server, and waits until both have.
func (u *Node) Stop() { u.life.Stop() }

func (u *Node) shutdown() {
	if u.agent != nil {
		u.agent.Stop()
	}
	if u.unregister != nil {
		u.unregister()
	}
	if u.client != nil {
		u.client.Close()
	}
	u.srv.Stop()
}
