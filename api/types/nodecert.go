package types

// NodeCertificateRequest renews a node's certificate
// (POST /v1/nodes/{name}/certificate): the node presents its current
// certificate (mutual TLS) and a CSR for a new key it made; the answer is
// a certificate for the same identity only.
type NodeCertificateRequest struct {
	// CSR is the PEM certificate signing request.
	CSR string `json:"csr"`
}

// NodeCertificateResponse is the renewed certificate.
type NodeCertificateResponse struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"` // NodeCertificate
	// Chain is the PEM chain, leaf first.
	Chain string `json:"chain"`
	// Bundle is the cluster's current PEM trust bundle, so a node learns
	// of a CA rotation as it renews.
	Bundle string `json:"bundle"`
}
