package initstage

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// HookKinds are the lifecycle points, in the order they happen.
var HookKinds = []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}

// HookList returns the hooks of one lifecycle point.
func HookList(h *specs.Hooks, kind string) []specs.Hook {
	if h == nil {
		return nil
	}
	switch kind {
	case "prestart":
		//lint:ignore SA1019 deprecated in the spec, still honoured as runc does
		return h.Prestart
	case "createRuntime":
		return h.CreateRuntime
	case "createContainer":
		return h.CreateContainer
	case "startContainer":
		return h.StartContainer
	case "poststart":
		return h.Poststart
	case "poststop":
		return h.Poststop
	}
	return nil
}

// RunHooks runs hooks in order with the container state (JSON) on stdin,
// as the runtime spec requires, and stops at the first failure.
func RunHooks(kind string, hooks []specs.Hook, state []byte) error {
	for i, h := range hooks {
		if err := runHook(h, state); err != nil {
			return fmt.Errorf("hooks.%s[%d] (%s): %w", kind, i, h.Path, err)
		}
	}
	return nil
}

func runHook(h specs.Hook, state []byte) error {
	ctx := context.Background()
	if h.Timeout != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*h.Timeout)*time.Second)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, h.Path)
	if len(h.Args) > 0 {
		cmd.Args = h.Args
	}
	cmd.Env = h.Env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.Stdin = bytes.NewReader(state)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("timed out after %ds", *h.Timeout)
	}
	if err != nil {
		if msg := strings.TrimSpace(out.String()); msg != "" {
			return fmt.Errorf("%w: %s", err, msg)
		}
		return err
	}
	return nil
}
