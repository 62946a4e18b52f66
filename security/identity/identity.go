// Package identity names the principals of a Nexus cluster as SPIFFE IDs:
//
//	spiffe://<cluster>/node/<name>              an agent (worker node)
//	spiffe://<cluster>/server/<name>            a control-plane member
//	spiffe://<cluster>/ns/<ns>/workload/<name>  a workload
//	spiffe://<cluster>/user/<name>              a person or tool using the API
//
// Certificates carry the ID as their only URI SAN; every authorization
// decision starts from a parsed ID, never from a common name.
package identity

import (
	"fmt"
	"net/url"
	"strings"
)

// Length limits, in bytes. A name is also a file name: nexus cert issue
// writes NAME.key and NAME.crt, and Linux file systems allow names of 255
// bytes (NAME_MAX), so a name leaves room for the 4-byte extension. A
// cluster (the trust domain) and a namespace are DNS-like and kept to a DNS
// name's 253.
const (
	MaxNameLen      = 255 - len(".crt")
	MaxClusterLen   = 253
	MaxNamespaceLen = 253
)

// Kind is the type of principal.
type Kind string

const (
	KindNode     Kind = "node"
	KindServer   Kind = "server"
	KindWorkload Kind = "workload"
	KindUser     Kind = "user"
)

// ID is a parsed SPIFFE ID of a Nexus principal.
type ID struct {
	Cluster   string // the SPIFFE trust domain
	Kind      Kind
	Namespace string // workloads only
	Name      string
}

// Node, Server, Workload and User build IDs.
func Node(cluster, name string) ID   { return ID{Cluster: cluster, Kind: KindNode, Name: name} }
func Server(cluster, name string) ID { return ID{Cluster: cluster, Kind: KindServer, Name: name} }
func User(cluster, name string) ID   { return ID{Cluster: cluster, Kind: KindUser, Name: name} }
func Workload(cluster, ns, name string) ID {
	return ID{Cluster: cluster, Kind: KindWorkload, Namespace: ns, Name: name}
}

// String formats the ID as a spiffe:// URI.
func (id ID) String() string {
	if id.Kind == KindWorkload {
		return fmt.Sprintf("spiffe://%s/ns/%s/workload/%s", id.Cluster, id.Namespace, id.Name)
	}
	return fmt.Sprintf("spiffe://%s/%s/%s", id.Cluster, id.Kind, id.Name)
}

// URL returns the ID as a URL, the form a certificate's URI SAN takes.
func (id ID) URL() *url.URL {
	u, _ := url.Parse(id.String())
	return u
}

// IsZero reports whether the ID is unset.
func (id ID) IsZero() bool { return id == ID{} }

// Validate checks every part of the ID.
func (id ID) Validate() error {
	if err := validLabel("cluster", id.Cluster, MaxClusterLen, true); err != nil {
		return err
	}
	switch id.Kind {
	case KindNode, KindServer, KindUser:
		if id.Namespace != "" {
			return fmt.Errorf("identity: a %s has no namespace", id.Kind)
		}
	case KindWorkload:
		if err := validLabel("namespace", id.Namespace, MaxNamespaceLen, false); err != nil {
			return err
		}
	default:
		return fmt.Errorf("identity: unknown kind %q (use node, server, workload or user)", id.Kind)
	}
	return validLabel("name", id.Name, MaxNameLen, false)
}

// validLabel allows what is safe in a URI path segment and a file name:
// lower-case letters, digits, '-', '.', '_' (and '@' outside domains);
// 1 to limit bytes.
func validLabel(what, s string, limit int, domain bool) error {
	if s == "" {
		return fmt.Errorf("identity: %s is empty: give 1 to %d characters", what, limit)
	}
	if len(s) > limit {
		why := ""
		if what == "name" {
			why = fmt.Sprintf(" (a name is also a file name, NAME.crt, and file names are at most %d bytes)", MaxNameLen+len(".crt"))
		}
		return fmt.Errorf("identity: %s %.40q... is %d characters: use at most %d%s", what, s, len(s), limit, why)
	}
	if s == "." || s == ".." {
		return fmt.Errorf("identity: %s %q is not a name", what, s)
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || (!domain && c == '@')
		if !ok {
			return fmt.Errorf("identity: %s %q: character %q is not allowed (use a-z, 0-9, '-', '.', '_')", what, s, c)
		}
	}
	return nil
}

// Parse reads a spiffe:// URI into an ID and validates it.
func Parse(s string) (ID, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return ID{}, fmt.Errorf("identity: %q is not a spiffe:// ID", s)
	}
	parts := strings.Split(rest, "/")
	var id ID
	switch {
	case len(parts) == 3 && (parts[1] == string(KindNode) || parts[1] == string(KindServer) || parts[1] == string(KindUser)):
		id = ID{Cluster: parts[0], Kind: Kind(parts[1]), Name: parts[2]}
	case len(parts) == 5 && parts[1] == "ns" && parts[3] == string(KindWorkload):
		id = ID{Cluster: parts[0], Kind: KindWorkload, Namespace: parts[2], Name: parts[4]}
	default:
		return ID{}, fmt.Errorf("identity: %q is not a Nexus ID (spiffe://<cluster>/node|server|user/<name> or spiffe://<cluster>/ns/<ns>/workload/<name>)", s)
	}
	if err := id.Validate(); err != nil {
		return ID{}, err
	}
	return id, nil
}
