package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"nexus.dev/nexus/api/types"
)

// Action is what Apply did.
type Action string

const (
	Created    Action = "created"
	Configured Action = "configured"
	Unchanged  Action = "unchanged"
)

// ApplyResult is what Apply did and the object as stored.
type ApplyResult struct {
	Action Action
	Object types.Object
}

// applyAttempts bounds how often Apply reads and updates an object that
// keeps changing under it (409 Conflict).
const applyAttempts = 5

// Apply makes the stored object what o says: it creates it, or, when it
// exists, updates it with the resourceVersion it read (retrying a few
// times on a conflict), or leaves it alone when it already is so. Fields
// the server sets (uid, resourceVersion, generation, creationTimestamp,
// status) are not compared and o's are ignored.
func (c *Client) Apply(ctx context.Context, o types.Object) (ApplyResult, error) {
	r := types.ResourceOf(o)
	if r == nil {
		return ApplyResult{}, fmt.Errorf("%T is not an API object", o)
	}
	desired, err := desiredState(r, o)
	if err != nil {
		return ApplyResult{}, err
	}
	m := desired.GetObjectMeta()
	if types.ValidateName(m.Name) != "" {
		// A name that cannot be in a URL cannot be read either: let the
		// server refuse the create, naming metadata.name.
		created, err := c.Create(ctx, desired)
		return ApplyResult{Action: Created, Object: created}, err
	}
	var lastErr error
	for attempt := 0; attempt < applyAttempts; attempt++ {
		if attempt > 0 {
			// Let whoever is changing the object finish.
			select {
			case <-ctx.Done():
				return ApplyResult{}, ctx.Err()
			case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
			}
		}
		cur, err := c.Get(ctx, r, m.Namespace, m.Name)
		if IsNotFound(err) {
			created, err := c.Create(ctx, desired)
			if IsAlreadyExists(err) {
				lastErr = err
				continue // created meanwhile: compare with it
			}
			if err != nil {
				return ApplyResult{}, err
			}
			return ApplyResult{Action: Created, Object: created}, nil
		}
		if err != nil {
			return ApplyResult{}, err
		}
		want, err := copyObject(r, desired)
		if err != nil {
			return ApplyResult{}, err
		}
		keepServerSet(want, cur)
		same, err := sameState(want, cur)
		if err != nil {
			return ApplyResult{}, err
		}
		if same {
			return ApplyResult{Action: Unchanged, Object: cur}, nil
		}
		want.GetObjectMeta().ResourceVersion = cur.GetObjectMeta().ResourceVersion
		updated, err := c.Update(ctx, want)
		if IsConflict(err) || IsNotFound(err) {
			lastErr = err
			continue
		}
		if err != nil {
			return ApplyResult{}, err
		}
		return ApplyResult{Action: Configured, Object: updated}, nil
	}
	return ApplyResult{}, fmt.Errorf("apply %s %q: it kept changing while being applied (%d attempts): %w", r.Singular, m.Name, applyAttempts, lastErr)
}

// desiredState is o without what the server sets, defaulted as the server
// defaults it, so that it compares equal to a stored copy of itself.
func desiredState(r *types.Resource, o types.Object) (types.Object, error) {
	d, err := copyObject(r, o)
	if err != nil {
		return nil, err
	}
	m := d.GetObjectMeta()
	m.UID, m.ResourceVersion, m.Generation, m.CreationTimestamp = "", "", 0, time.Time{}
	types.Default(d)
	return d, nil
}

// keepServerSet copies into want the spec fields the server fills in when
// they are left empty, so that applying a file that leaves them out
// neither counts as a change nor tries to undo them.
func keepServerSet(want, cur types.Object) {
	if w, ok := want.(*types.Service); ok {
		w.Spec.KeepAllocated(&cur.(*types.Service).Spec)
	}
}

func copyObject(r *types.Resource, o types.Object) (types.Object, error) {
	js, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode %s %q: %w", r.Singular, o.GetObjectMeta().Name, err)
	}
	return decodeObject(r, js)
}

// sameState compares two objects without the fields the server sets.
func sameState(a, b types.Object) (bool, error) {
	ja, err := stateJSON(a)
	if err != nil {
		return false, err
	}
	jb, err := stateJSON(b)
	if err != nil {
		return false, err
	}
	return bytes.Equal(ja, jb), nil
}

func stateJSON(o types.Object) ([]byte, error) {
	js, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		for _, k := range []string{"uid", "resourceVersion", "generation", "creationTimestamp"} {
			delete(meta, k)
		}
	}
	return json.Marshal(m)
}
