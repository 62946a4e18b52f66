package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"nexus.dev/nexus/api/types"
)

// ListOptions narrow a list or a watch.
type ListOptions struct {
	// LabelSelector: "app=web,tier in (a,b),!canary".
	LabelSelector string
	// FieldSelector: "metadata.name=web", "spec.nodeName=n1", ...
	FieldSelector string
	// Limit is the page size (default 500); List follows every page.
	Limit int64
}

// DeleteOptions: ResourceVersion, when set, deletes only if the object is
// still at that version (409 Conflict otherwise).
type DeleteOptions struct {
	ResourceVersion string
}

// path is the URL path of a collection (name "") or object of r.
func path(r *types.Resource, ns, name string) (string, error) {
	for _, n := range []struct{ what, v string }{{"namespace", ns}, {r.Singular + " name", name}} {
		if n.v == "" {
			continue
		}
		if msg := types.ValidateName(n.v); msg != "" {
			return "", fmt.Errorf("%s %q: %s", n.what, n.v, msg)
		}
	}
	if r.Namespaced && name != "" && ns == "" {
		return "", fmt.Errorf("%s %q: %s are namespaced: give a namespace", r.Singular, name, r.Plural)
	}
	p := "/v1/"
	if r.Namespaced && ns != "" {
		p += "namespaces/" + ns + "/"
	}
	p += r.Plural
	if name != "" {
		p += "/" + name
	}
	return p, nil
}

// decodeObject reads an object of r from the server. Unknown fields are
// allowed here (unlike in what users send): a newer server may add some.
func decodeObject(r *types.Resource, data []byte) (types.Object, error) {
	o := r.New()
	if err := json.Unmarshal(data, o); err != nil {
		return nil, fmt.Errorf("the server sent a %s that does not decode: %w", r.Kind, err)
	}
	return o, nil
}

// object sends a request whose answer is one object.
func (c *Client) object(ctx context.Context, r *types.Resource, req request) (types.Object, error) {
	data, err := c.call(ctx, req)
	if err != nil {
		return nil, err
	}
	return decodeObject(r, data)
}

// send1 sends an object to its collection (create) or to itself: the
// path comes from the object's metadata. A create leaves checking the
// name to the server, whose refusal names the field.
func (c *Client) send1(ctx context.Context, method string, o types.Object, sub string, toObject bool) (types.Object, error) {
	r := types.ResourceOf(o)
	if r == nil {
		return nil, fmt.Errorf("%T is not an API object", o)
	}
	m := o.GetObjectMeta()
	switch {
	case r.Namespaced && m.Namespace == "":
		return nil, fmt.Errorf("%s %q: metadata.namespace is not set", r.Singular, m.Name)
	case !r.Namespaced && m.Namespace != "":
		return nil, fmt.Errorf("%s %q: metadata.namespace must be empty: %s are not namespaced", r.Singular, m.Name, r.Plural)
	case toObject && m.Name == "":
		return nil, fmt.Errorf("%s: metadata.name is not set", r.Singular)
	}
	name := ""
	if toObject {
		name = m.Name
	}
	p, err := path(r, m.Namespace, name)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode %s %q: %w", r.Singular, m.Name, err)
	}
	return c.object(ctx, r, request{method: method, path: p + sub, body: body, ctype: "application/json"})
}

// Get reads one object. ns is ignored for cluster-scoped resources.
func (c *Client) Get(ctx context.Context, r *types.Resource, ns, name string) (types.Object, error) {
	if name == "" {
		return nil, fmt.Errorf("get %s: no name given", r.Singular)
	}
	p, err := path(r, scope(r, ns), name)
	if err != nil {
		return nil, err
	}
	return c.object(ctx, r, request{method: http.MethodGet, path: p})
}

// scope drops the namespace of a cluster-scoped resource.
func scope(r *types.Resource, ns string) string {
	if !r.Namespaced {
		return ""
	}
	return ns
}

// List reads every object of r in ns (every namespace when ns is empty),
// page by page, all at one revision, which it returns as the list's
// resourceVersion: a watch from it sees every later change.
func (c *Client) List(ctx context.Context, r *types.Resource, ns string, opts ListOptions) ([]types.Object, string, error) {
	p, err := path(r, scope(r, ns), "")
	if err != nil {
		return nil, "", err
	}
	q := selectors(opts)
	limit := opts.Limit
	if limit <= 0 {
		limit = listPageSize
	}
	q.Set("limit", fmt.Sprint(limit))
	var items []types.Object
	var rv string
	for {
		data, err := c.call(ctx, request{method: http.MethodGet, path: p, query: q})
		if err != nil {
			return nil, "", err
		}
		var page struct {
			Metadata types.ListMeta    `json:"metadata"`
			Items    []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(data, &page); err != nil {
			return nil, "", fmt.Errorf("the server sent a %s list that does not decode: %w", r.Kind, err)
		}
		for _, raw := range page.Items {
			o, err := decodeObject(r, raw)
			if err != nil {
				return nil, "", err
			}
			items = append(items, o)
		}
		if rv == "" {
			rv = page.Metadata.ResourceVersion
		}
		if page.Metadata.Continue == "" {
			return items, rv, nil
		}
		q.Set("continue", page.Metadata.Continue)
	}
}

func selectors(opts ListOptions) url.Values {
	q := url.Values{}
	if opts.LabelSelector != "" {
		q.Set("labelSelector", opts.LabelSelector)
	}
	if opts.FieldSelector != "" {
		q.Set("fieldSelector", opts.FieldSelector)
	}
	return q
}

// Create stores a new object, in the namespace its metadata names, and
// returns it as stored (with uid, resourceVersion and defaults).
func (c *Client) Create(ctx context.Context, o types.Object) (types.Object, error) {
	return c.send1(ctx, http.MethodPost, o, "", false)
}

// Update replaces an object (its status is kept). When the object carries
// a resourceVersion, the update succeeds only if it is still current
// (IsConflict otherwise).
func (c *Client) Update(ctx context.Context, o types.Object) (types.Object, error) {
	return c.send1(ctx, http.MethodPut, o, "", true)
}

// UpdateStatus replaces an object's status (everything else is kept), with
// the same resourceVersion rule as Update.
func (c *Client) UpdateStatus(ctx context.Context, o types.Object) (types.Object, error) {
	if r := types.ResourceOf(o); r != nil && !r.HasStatus {
		return nil, fmt.Errorf("%s have no status", r.Plural)
	}
	return c.send1(ctx, http.MethodPut, o, "/status", true)
}

// Patch applies a JSON merge patch (RFC 7386) to an object. A patch that
// sets metadata.resourceVersion applies only if the object is still at it.
func (c *Client) Patch(ctx context.Context, r *types.Resource, ns, name string, patch []byte) (types.Object, error) {
	p, err := path(r, scope(r, ns), name)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fmt.Errorf("patch %s: no name given", r.Singular)
	}
	return c.object(ctx, r, request{method: http.MethodPatch, path: p, body: patch, ctype: "application/merge-patch+json"})
}

// Delete removes an object and returns it as it was last.
func (c *Client) Delete(ctx context.Context, r *types.Resource, ns, name string, opts DeleteOptions) (types.Object, error) {
	if name == "" {
		return nil, fmt.Errorf("delete %s: no name given", r.Singular)
	}
	p, err := path(r, scope(r, ns), name)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	if opts.ResourceVersion != "" {
		q.Set("resourceVersion", opts.ResourceVersion)
	}
	return c.object(ctx, r, request{method: http.MethodDelete, path: p, query: q})
}
