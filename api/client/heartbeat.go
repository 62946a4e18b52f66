package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"nexus.dev/nexus/api/types"
)

// NodeHeartbeat renews node's heartbeat lease (POST
// /v1/nodes/{name}/heartbeat), as its agent does every second; the answer
// says how long the lease lives without another heartbeat. Only the node
// itself (or an admin) may heartbeat for it. It is not retried: the next
// heartbeat is.
func (c *Client) NodeHeartbeat(ctx context.Context, node string) (*types.NodeHeartbeat, error) {
	data, err := c.postNode(ctx, node, "heartbeat", nil)
	if err != nil {
		return nil, err
	}
	var hb types.NodeHeartbeat
	if err := json.Unmarshal(data, &hb); err != nil {
		return nil, fmt.Errorf("the server's answer to the heartbeat of node %s does not decode: %w", node, err)
	}
	if hb.LeaseDurationSeconds <= 0 {
		return nil, fmt.Errorf("the server's answer to the heartbeat of node %s has no lease duration", node)
	}
	return &hb, nil
}

// postNode posts body (JSON, or nothing) to a subresource of node, e.g.
// /v1/nodes/n1/heartbeat, and returns the answer.
func (c *Client) postNode(ctx context.Context, node, sub string, body []byte) ([]byte, error) {
	nodes, _ := types.LookupResource("nodes")
	p, err := path(nodes, "", node)
	if err != nil {
		return nil, err
	}
	req := request{method: http.MethodPost, path: p + "/" + sub}
	if body != nil {
		req.body, req.ctype = body, "application/json"
	}
	return c.call(ctx, req)
}
