package authz

// Field selector keys NodeRestriction reads from Attributes.FieldSelector.
const (
	FieldNodeName = "spec.nodeName" // instances: the node an instance is bound to
	FieldName     = "metadata.name" // any object's name
)

// NodeGraph answers what NodeRestriction needs to know about the objects
// a node asks for. The API implements it over its view of the store.
type NodeGraph interface {
	// InstanceNode returns the node the instance namespace/name is bound
	// to: "" when it is not bound or does not exist.
	InstanceNode(namespace, name string) string
	// NodeUsesSecret reports whether an instance bound to node uses the
	// Secret namespace/name.
	NodeUsesSecret(node, namespace, name string) bool
}

// NodeRestriction is the identity check for nodes (the second of the
// API's three checks): a node acts only for itself. It applies to
// principals of kind node and allows everything else; RBAC (Authorize)
// decides separately, and a request needs both.
//
// A node may
//   - read every Node (the data plane routes to the other nodes' prefixes,
//     so it needs their addresses), and create, update, patch or delete
//     only its own Node and nodes/status;
//   - get an Instance, and get, update or patch its status, only when the
//     instance is bound to it; list or watch instances only with the field
//     selector spec.nodeName=<itself>, which the API applies;
//   - get a Secret only when an instance bound to it uses it; list or
//     watch secrets only in one namespace with metadata.name=<such a
//     secret> (how an agent watches one secret for changes), which the API
//     applies;
//   - do nothing else to instances (log, exec, spec) or secrets.
//
// Other resources are not restricted here: every node needs every
// Service, Endpoints and NetworkPolicy, because any container may connect
// to any service and policies are enforced on both ends.
func NodeRestriction(at Attributes, g NodeGraph) Decision {
	u := at.User
	if u.Kind != PrincipalNode {
		return Decision{Allowed: true, Reason: principal(u) + " is not a node: no node restriction"}
	}
	self := u.Name
	if self == "" {
		return nodeDeny(at, "the node has no name")
	}
	reading := at.Verb == VerbGet || at.Verb == VerbList || at.Verb == VerbWatch
	switch at.Resource {
	case "nodes":
		if reading {
			return nodeAllow(at, "a node reads every Node")
		}
		if at.Name != self {
			return nodeDeny(at, "a node writes only its own Node ("+self+")")
		}
		return nodeAllow(at, "its own Node")
	case "instances":
		switch {
		case at.Subresource == "" && (at.Verb == VerbList || at.Verb == VerbWatch):
			if sel, ok := at.FieldSelector[FieldNodeName]; !ok || sel != self {
				return nodeDeny(at, "a node lists and watches only its own instances: select "+FieldNodeName+"="+self)
			}
			return nodeAllow(at, "selected by "+FieldNodeName+"="+self)
		case at.Subresource == "" && at.Verb == VerbGet,
			at.Subresource == "status" && (reading || at.Verb == VerbUpdate || at.Verb == VerbPatch):
			if at.Name == "" {
				return nodeDeny(at, "no instance named")
			}
			if bound := g.InstanceNode(at.Namespace, at.Name); bound != self {
				if bound == "" {
					return nodeDeny(at, "the instance is not bound to any node")
				}
				return nodeDeny(at, "the instance is bound to node "+bound)
			}
			return nodeAllow(at, "the instance is bound to it")
		}
		return nodeDeny(at, "a node only reads the instances bound to it and writes their status")
	case "secrets":
		name := at.Name
		switch at.Verb {
		case VerbGet:
		case VerbList, VerbWatch:
			name = at.FieldSelector[FieldName]
			if name == "" || at.Namespace == "" {
				return nodeDeny(at, "a node lists and watches secrets one at a time: name the namespace and select "+FieldName+"=<secret>")
			}
		default:
			return nodeDeny(at, "a node only reads secrets")
		}
		if name == "" || !g.NodeUsesSecret(self, at.Namespace, name) {
			return nodeDeny(at, "no instance bound to it uses the secret")
		}
		return nodeAllow(at, "an instance bound to it uses the secret")
	}
	return nodeAllow(at, "no node restriction on "+at.Resource)
}

func nodeAllow(at Attributes, why string) Decision {
	return Decision{Allowed: true, Reason: reason(at, " may ", why)}
}

func nodeDeny(at Attributes, why string) Decision {
	return Decision{Reason: reason(at, " may not ", why)}
}
