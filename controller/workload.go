package controller

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

const workloadKind = "Workload"

// ownerKey is namespace/name of the workload an instance belongs to,
// from its controller owner reference.
func ownerKey(i *types.Instance) (string, bool) {
	if ref := controllerRef(i); ref != nil {
		return i.Namespace + "/" + ref.Name, true
	}
	return "", false
}

func controllerRef(i *types.Instance) *types.OwnerReference {
	for k := range i.OwnerReferences {
		if r := &i.OwnerReferences[k]; r.Kind == workloadKind && r.Controller {
			return r
		}
	}
	return nil
}

// reconcileWorkload makes a workload's instances and status what its spec
// asks for, and deletes the instances of a workload that is gone.
func (c *Controllers) reconcileWorkload(ctx context.Context, key string) error {
	ns, name, _ := strings.Cut(key, "/")
	var owned []*types.Instance
	for _, o := range c.instances.list(func(o types.Object) bool {
		i := o.(*types.Instance)
		ref := controllerRef(i)
		return i.Namespace == ns && ref != nil && ref.Name == name
	}) {
		owned = append(owned, o.(*types.Instance))
	}
	cached, _ := c.workloads.get(key).(*types.Workload)
	var orphans, mine []*types.Instance
	for _, i := range owned {
		if cached != nil && controllerRef(i).UID == cached.UID {
			mine = append(mine, i)
		} else {
			orphans = append(orphans, i)
		}
	}
	if len(orphans) > 0 {
		if err := c.collectOrphans(ctx, ns, name, orphans); err != nil {
			return err
		}
	}
	if cached == nil {
		return nil
	}
	w := cached
	v := view{w: w, hash: TemplateHash(&w.Spec.Template), instances: mine, now: time.Now()}
	if w.Spec.Kind == types.KindDaemon {
		for _, o := range c.nodes.list(nil) {
			v.nodes = append(v.nodes, o.(*types.Node))
		}
	}
	p := decide(v)
	for _, i := range p.delete {
		if err := c.deleteInstance(ctx, i); err != nil {
			return err
		}
	}
	for _, node := range p.create {
		if err := c.createInstance(ctx, w, v.hash, node); err != nil {
			return err
		}
	}
	if err := c.syncStopOnDisconnect(ctx, w, mine, p.delete); err != nil {
		return err
	}
	st := p.status
	st.History = recordRevision(w.Status.History, v.hash, w.Spec.Template, w.Annotations[AnnotationChangeCause], v.now, HistoryLimit)
	if sameJSON(st, w.Status) {
		return nil
	}
	upd := *w
	upd.Status = st
	got, err := c.c.UpdateStatus(ctx, &upd)
	switch {
	case client.IsConflict(err), client.IsNotFound(err):
		// The workload changed or went while we worked: its event brings
		// it back to the queue.
		return nil
	case err != nil:
		return fmt.Errorf("update status of workload %s: %w", key, err)
	}
	c.workloads.observe(got, false)
	return nil
}

// collectOrphans deletes instances whose workload is gone (or was deleted
// and made again: another uid). The cache may lag behind, so the API is
// asked before anything is deleted.
func (c *Controllers) collectOrphans(ctx context.Context, ns, name string, orphans []*types.Instance) error {
	o, err := c.c.Get(ctx, c.wlRes, ns, name)
	uid := ""
	switch {
	case client.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("look up workload %s/%s, the owner of %d instances: %w", ns, name, len(orphans), err)
	default:
		uid = o.GetObjectMeta().UID
		c.workloads.observe(o, false)
	}
	for _, i := range orphans {
		if controllerRef(i).UID == uid {
			continue
		}
		c.log.Info("deleting orphaned instance", "instance", keyOf(i), "workload", name)
		if err := c.deleteInstance(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

func (c *Controllers) deleteInstance(ctx context.Context, i *types.Instance) error {
	got, err := c.c.Delete(ctx, c.instRes, i.Namespace, i.Name, client.DeleteOptions{ResourceVersion: i.ResourceVersion})
	switch {
	case client.IsNotFound(err):
		c.instances.deleted(i)
		return nil
	case client.IsConflict(err):
		// Changed since we looked (its agent reported): decide again with
		// what it is now.
		return fmt.Errorf("delete instance %s: changed meanwhile: %w", keyOf(i), err)
	case err != nil:
		return fmt.Errorf("delete instance %s: %w", keyOf(i), err)
	}
	c.log.Debug("deleted instance", "instance", keyOf(i), "phase", i.Status.Phase)
	c.instances.deleted(got)
	return nil
}

// syncStopOnDisconnect keeps the stopOnDisconnect of w's live instances
// equal to w's (which follows its replicas unless set): the agent reads it
// from the instance when its node is cut off, so a service scaled from one
// replica to three has its first instance fenced too.
func (c *Controllers) syncStopOnDisconnect(ctx context.Context, w *types.Workload, insts, deleted []*types.Instance) error {
	want := w.Spec.StopsOnDisconnect()
	for _, i := range insts {
		if i.Spec.StopOnDisconnect == want || terminal(i.Status.Phase) || slices.Contains(deleted, i) {
			continue
		}
		upd := *i
		upd.Spec.StopOnDisconnect = want
		got, err := c.c.Update(ctx, &upd)
		switch {
		case client.IsConflict(err), client.IsNotFound(err):
			// Changed or gone meanwhile: its event brings the workload back.
		case err != nil:
			return fmt.Errorf("set stopOnDisconnect of instance %s: %w", keyOf(i), err)
		default:
			c.instances.observe(got, false)
		}
	}
	return nil
}

// createInstance makes one instance of w's template; node names the node
// a daemon's instance is for.
func (c *Controllers) createInstance(ctx context.Context, w *types.Workload, hash, node string) error {
	inst := &types.Instance{TypeMeta: types.TypeMeta{APIVersion: types.APIVersion, Kind: "Instance"}}
	inst.Namespace = w.Namespace
	inst.Labels = maps.Clone(w.Spec.Template.Labels)
	inst.OwnerReferences = []types.OwnerReference{{Kind: workloadKind, Name: w.Name, UID: w.UID, Controller: true}}
	inst.Spec = types.InstanceSpec{Workload: w.Name, Revision: hash, Template: w.Spec.Template, Placement: w.Spec.Placement,
		StopOnDisconnect: w.Spec.StopsOnDisconnect()}
	if node != "" {
		inst.Spec.Placement.Constraints = append(append([]string(nil), w.Spec.Placement.Constraints...), daemonNodeConstraintKey+"="+node)
	}
	for attempt := 0; ; attempt++ {
		inst.Name = InstanceName(w.Name)
		got, err := c.c.Create(ctx, inst)
		if client.IsAlreadyExists(err) && attempt < 3 {
			continue
		}
		if err != nil {
			return fmt.Errorf("create an instance of workload %s/%s: %w", w.Namespace, w.Name, err)
		}
		c.log.Debug("created instance", "instance", keyOf(got), "revision", hash, "node", node)
		c.instances.observe(got, false)
		return nil
	}
}

// nameAlphabet leaves out vowels and look-alikes, as Kubernetes' generated
// names do, so a name never spells a word.
const nameAlphabet = "bcdfghjklmnpqrstvwxz2456789"

// InstanceName is a new instance's name: the workload's name, '-' and five
// random characters ("web-7xk2p"), shortened to fit 63 characters.
func InstanceName(workload string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	suffix := make([]byte, 5)
	for i, v := range b {
		suffix[i] = nameAlphabet[int(v)%len(nameAlphabet)]
	}
	base := workload
	if len(base) > 57 {
		base = strings.TrimRight(base[:57], "-")
	}
	return base + "-" + string(suffix)
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
