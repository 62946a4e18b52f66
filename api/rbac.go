package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"nexus.dev/nexus/api/storage"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/audit"
	"nexus.dev/nexus/security/authz"
)

// rbacCache keeps an Authorizer built from the stored roles and bindings,
// rebuilt whenever one of them changes (watched), so authorization costs
// map lookups, not store reads.
type rbacCache struct {
	store *storage.Store
	log   *slog.Logger
	cur   atomic.Pointer[authz.Authorizer]
}

var rbacResources = []string{"clusterroles", "clusterrolebindings", "roles", "rolebindings"}

func newRBACCache(s *storage.Store, log *slog.Logger) *rbacCache {
	c := &rbacCache{store: s, log: log}
	c.cur.Store(authz.New(authz.Policy{})) // the built-in roles and bindings only
	return c
}

func (c *rbacCache) current() *authz.Authorizer { return c.cur.Load() }

// run loads the policy, calls ready once it is loaded, and reloads it after
// every change until ctx ends.
func (c *rbacCache) run(ctx context.Context, ready func()) error {
	changed := make(chan struct{}, 1)
	for {
		revs, err := c.load(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Warn("load RBAC policy", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		ready()
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, len(rbacResources))
		for _, name := range rbacResources {
			res, _ := types.LookupResource(name)
			go func() { done <- c.watch(wctx, res, revs[name], changed) }()
		}
		select {
		case <-ctx.Done():
			cancel()
			return nil
		case <-changed:
			// Let a burst of changes settle, then reload once.
			time.Sleep(20 * time.Millisecond)
		case err := <-done:
			if err != nil && ctx.Err() == nil {
				c.log.Warn("RBAC watch ended; reloading", "err", err)
			}
		}
		cancel() // the watches end; done is buffered for all of them
	}
}

func (c *rbacCache) watch(ctx context.Context, res *types.Resource, rev int64, changed chan<- struct{}) error {
	w, err := c.store.Watch(ctx, res, "", storage.WatchOptions{ResourceVersion: strconv.FormatInt(rev, 10)})
	if err != nil {
		return err
	}
	for range w.Events() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	return w.Err()
}

// load reads every role and binding and swaps in a new Authorizer. It
// returns the revision each resource was read at, where its watch starts.
func (c *rbacCache) load(ctx context.Context) (map[string]int64, error) {
	var p authz.Policy
	revs := map[string]int64{}
	for _, name := range rbacResources {
		res, _ := types.LookupResource(name)
		l, err := c.store.List(ctx, res, "", storage.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", name, err)
		}
		revs[name] = l.Revision
		for _, o := range l.Items {
			switch o := o.(type) {
			case *types.ClusterRole:
				p.ClusterRoles = append(p.ClusterRoles, authz.Role{Name: o.Name, Rules: o.Rules})
			case *types.Role:
				p.Roles = append(p.Roles, authz.Role{Namespace: o.Namespace, Name: o.Name, Rules: o.Rules})
			case *types.ClusterRoleBinding:
				p.ClusterRoleBindings = append(p.ClusterRoleBindings, authz.Binding{Name: o.Name, Subjects: o.Subjects, RoleRef: o.RoleRef})
			case *types.RoleBinding:
				p.RoleBindings = append(p.RoleBindings, authz.Binding{Namespace: o.Namespace, Name: o.Name, Subjects: o.Subjects, RoleRef: o.RoleRef})
			}
		}
	}
	c.cur.Store(authz.New(p))
	return revs, nil
}

// authorize runs the second and third checks: the node identity binding
// and RBAC. Both decisions go into the audit record and the debug log.
func (s *Server) authorize(r *request) *Problem {
	at := authz.Attributes{User: r.principal.User, Verb: r.verb, Resource: r.res.Plural, Subresource: r.sub, Namespace: r.namespace, Name: r.name}
	if r.verb == "create" && r.name == "" && r.sub == "" {
		at.Name = s.peekName(r)
	}
	if r.verb == "list" || r.verb == "watch" {
		if fs, err := types.ParseFieldSelector(r.query.Get("fieldSelector")); err == nil {
			at.FieldSelector = map[string]string{}
			for _, k := range []string{authz.FieldNodeName, authz.FieldName} {
				if v, ok := fs.RequiredValue(k); ok {
					at.FieldSelector[k] = v
				}
			}
		}
	}
	id := authz.NodeRestriction(at, nodeGraph{s: s, ctx: r.http.Context()})
	r.decision.Identity = &audit.Check{Allowed: id.Allowed, Reason: id.Reason}
	if !id.Allowed {
		s.log.Info("request denied by the identity check", "principal", r.principal.ID, "request", r.describe(), "verb", r.verb, "reason", id.Reason)
		return problem(http.StatusForbidden, "Forbidden", "%s", id.Reason)
	}
	d := s.rbac.current().Authorize(at)
	r.decision.Authz = &audit.Check{Allowed: d.Allowed, Reason: d.Reason}
	if !d.Allowed {
		s.log.Info("request denied by RBAC", "principal", r.principal.ID, "request", r.describe(), "verb", r.verb, "reason", d.Reason)
		return problem(http.StatusForbidden, "Forbidden", "%s", d.Reason)
	}
	s.log.Debug("request allowed", "principal", r.principal.ID, "verb", r.verb, "request", r.describe(),
		"authn", r.decision.Authn.Reason, "identity", id.Reason, "authz", d.Reason)
	return nil
}

// peekName reads metadata.name from a create's body (bounded like any
// body), so the checks can see which object is being created.
func (s *Server) peekName(r *request) string {
	b, err := s.readBody(r)
	if err != nil {
		return ""
	}
	js, err := types.ToJSON(b)
	if err != nil {
		return ""
	}
	if o, err := types.Decode(js, r.res); err == nil {
		r.decoded = o
		return o.GetObjectMeta().Name
	}
	// Not an object the handler will take (it says why after the checks),
	// but its name, if it has one, is what the caller asked to create.
	var m struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(js, &m)
	return m.Metadata.Name
}

// nodeGraph answers the node identity check's questions from the store.
type nodeGraph struct {
	s   *Server
	ctx context.Context
}

var instancesRes, _ = types.LookupResource("instances")

func (g nodeGraph) InstanceNode(ns, name string) string {
	o, _, err := g.s.current(g.ctx, instancesRes, ns, name)
	if err != nil {
		return ""
	}
	return o.(*types.Instance).Spec.NodeName
}

func (g nodeGraph) NodeUsesSecret(node, ns, name string) bool {
	fs, err := types.ParseFieldSelector("spec.nodeName=" + node)
	if err != nil {
		return false
	}
	l, err := g.s.store.List(g.ctx, instancesRes, ns, storage.ListOptions{Fields: fs})
	if err != nil {
		return false
	}
	for _, o := range l.Items {
		for _, e := range o.(*types.Instance).Spec.Template.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == name {
				return true
			}
		}
	}
	return false
}
