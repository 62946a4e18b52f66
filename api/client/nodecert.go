package client

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"

	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/pki"
)

// RenewNodeCertificate sends a CSR for node's new key, as node (the
// client's certificate must be node's current one), and returns the new
// chain (leaf first) and the cluster's current trust bundle. It is the
// round trip of a pki.Renewer on an agent (pki.RenewFunc).
func (c *Client) RenewNodeCertificate(ctx context.Context, node string, csrPEM []byte) ([]*x509.Certificate, *pki.Bundle, error) {
	body, _ := json.Marshal(types.NodeCertificateRequest{CSR: string(csrPEM)})
	data, err := c.postNode(ctx, node, "certificate", body)
	if err != nil {
		return nil, nil, err
	}
	var out types.NodeCertificateResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, nil, fmt.Errorf("renew node %s's certificate: the answer does not decode: %w", node, err)
	}
	chain, err := pki.ParseCertificates([]byte(out.Chain))
	if err != nil {
		return nil, nil, fmt.Errorf("renew node %s's certificate: the answer's chain: %w", node, err)
	}
	bundle, err := pki.ParseBundle([]byte(out.Bundle))
	if err != nil {
		return nil, nil, fmt.Errorf("renew node %s's certificate: the answer's bundle: %w", node, err)
	}
	return chain, bundle, nil
}
