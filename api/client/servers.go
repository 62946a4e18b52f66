package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// ServerURLs lists the API URLs the cluster's servers publish
// (GET /v1/servers: status.apiURL of each Server), for a client that fails
// over between them (SetServers). An API without that resource answers
// NotFound (IsNotFound).
func (c *Client) ServerURLs(ctx context.Context) ([]string, error) {
	req := request{method: http.MethodGet, path: "/v1/servers"}
	resp, err := c.do(ctx, req)
	if err != nil {
		return nil, err
	}
	data, err := c.readBody(resp, req)
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Status struct {
				APIURL string `json:"apiURL"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("list the cluster's servers: the answer does not decode: %w", err)
	}
	var urls []string
	for _, s := range list.Items {
		if s.Status.APIURL != "" {
			urls = append(urls, s.Status.APIURL)
		}
	}
	return urls, nil
}
