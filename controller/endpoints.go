package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

// The endpoints controller keeps, for every Service, the Endpoints of the
// same name current (endpointsOf) and the Service's Endpoints condition
// (endpointsCondition), and deletes the Endpoints of a Service that is
// gone. It is driven by the watches: a change of an instance queues the
// Services of its namespace whose selector matches it (before or after
// the change), so a readiness or address change reaches the Endpoints in
// one reconcile, without polling.

// enqueueServicesOf queues the Services that select an instance, before
// or after a change (a label change moves it between Services).
func (c *Controllers) enqueueServicesOf(old, nw types.Object) {
	for _, o := range []types.Object{old, nw} {
		i, ok := o.(*types.Instance)
		if !ok {
			continue
		}
		for _, s := range c.services.list(func(s types.Object) bool {
			svc := s.(*types.Service)
			return svc.Namespace == i.Namespace && len(svc.Spec.Selector) > 0 && types.SelectorFromMap(svc.Spec.Selector).Matches(i.Labels)
		}) {
			c.eq.add(keyOf(s))
		}
	}
}

// reconcileEndpoints makes the Endpoints and the Endpoints condition of
// the Service key (namespace/name) what its instances say, or deletes the
// Endpoints when the Service is gone.
func (c *Controllers) reconcileEndpoints(ctx context.Context, key string) error {
	svc, _ := c.services.get(key).(*types.Service)
	cur, _ := c.endpoints.get(key).(*types.Endpoints)
	if svc == nil {
		return c.deleteEndpoints(ctx, key, cur)
	}
	var insts []*types.Instance
	for _, o := range c.instances.list(func(o types.Object) bool { return o.GetObjectMeta().Namespace == svc.Namespace }) {
		insts = append(insts, o.(*types.Instance))
	}
	want := endpointsOf(svc, insts)
	if err := c.writeEndpoints(ctx, want, cur); err != nil {
		return err
	}
	return c.setEndpointsCondition(ctx, svc, endpointsCondition(svc, want))
}

// writeEndpoints stores want unless cur (the cached Endpoints) holds it.
func (c *Controllers) writeEndpoints(ctx context.Context, want, cur *types.Endpoints) error {
	key := keyOf(want)
	if cur != nil && sameEndpoints(want, cur) {
		return nil
	}
	var got types.Object
	var err error
	if cur == nil {
		got, err = c.c.Create(ctx, want)
		if client.IsAlreadyExists(err) {
			// Made by an earlier term of the controller, not yet cached:
			// read it and write over it.
			if got, err = c.c.Get(ctx, c.epRes, want.Namespace, want.Name); err == nil {
				c.endpoints.observe(got, false)
				return fmt.Errorf("endpoints %s existed already: writing it again", key)
			}
		}
	} else {
		want.ResourceVersion = cur.ResourceVersion
		got, err = c.c.Update(ctx, want)
		if client.IsNotFound(err) {
			c.endpoints.deleted(cur)
			return fmt.Errorf("endpoints %s was deleted meanwhile: creating it again", key)
		}
	}
	if err != nil {
		// A conflict: the cache is behind; its event requeues the Service.
		return fmt.Errorf("write endpoints %s: %w", key, err)
	}
	c.endpoints.observe(got, false)
	c.log.Debug("endpoints written", "service", key, "backends", len(want.Backends), "ready", want.ReadyCount())
	return nil
}

// deleteEndpoints deletes the Endpoints of a Service that is gone. The
// cache may lag, so a Service seen in the API keeps them.
func (c *Controllers) deleteEndpoints(ctx context.Context, key string, cur *types.Endpoints) error {
	if cur == nil {
		return nil
	}
	ns, name, _ := strings.Cut(key, "/")
	if o, err := c.c.Get(ctx, c.svcRes, ns, name); err == nil {
		c.services.observe(o, false)
		return nil
	} else if !client.IsNotFound(err) {
		return fmt.Errorf("look up service %s before deleting its endpoints: %w", key, err)
	}
	got, err := c.c.Delete(ctx, c.epRes, ns, name, client.DeleteOptions{ResourceVersion: cur.ResourceVersion})
	switch {
	case client.IsNotFound(err):
		c.endpoints.deleted(cur)
		return nil
	case err != nil:
		return fmt.Errorf("delete endpoints %s of a deleted service: %w", key, err)
	}
	c.endpoints.deleted(got)
	return nil
}

// setEndpointsCondition writes the Service's Endpoints condition when it
// changed.
func (c *Controllers) setEndpointsCondition(ctx context.Context, svc *types.Service, cond types.Condition) error {
	upd := *svc
	upd.Status.Conditions = append([]types.Condition(nil), svc.Status.Conditions...)
	cond.LastTransitionTime = time.Now().UTC().Truncate(time.Second)
	if !types.SetCondition(&upd.Status.Conditions, cond) {
		return nil
	}
	got, err := c.c.UpdateStatus(ctx, &upd)
	switch {
	case client.IsConflict(err), client.IsNotFound(err):
		// Changed or gone meanwhile: its event brings it back.
		return nil
	case err != nil:
		return fmt.Errorf("update status of service %s: %w", keyOf(svc), err)
	}
	c.services.observe(got, false)
	return nil
}
