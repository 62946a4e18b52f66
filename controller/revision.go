package controller

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"time"

	"nexus.dev/nexus/api/types"
)

// HistoryLimit is how many templates a workload's status.history keeps
// (Kubernetes' revisionHistoryLimit default). The current template is
// always among them.
const HistoryLimit = 10

// AnnotationChangeCause on a workload is recorded with each new revision
// in its history (`nexus rollout history` shows it), as Kubernetes records
// kubernetes.io/change-cause.
const AnnotationChangeCause = "nexus.dev/change-cause"

// TemplateHash names a template: the first 10 hex digits of the SHA-256 of
// its JSON. Instances carry it in spec.revision; a workload whose template
// hashes differently from an instance's rolls that instance out. The
// template is hashed as the API stores it (defaulted), so the same
// template always gives the same hash.
func TemplateHash(t *types.InstanceTemplate) string {
	b, err := json.Marshal(t)
	if err != nil {
		// A template is plain data: it always encodes.
		panic("controller: encode template: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:5])
}

// recordRevision returns hist with the template of hash as its newest
// entry. A template already in the history (an undo, or a change
// reverted by hand) moves to the next number, as Kubernetes renumbers the
// ReplicaSet it rolls back to; a new one gets the next number. At most
// limit entries are kept, the oldest dropped first.
func recordRevision(hist []types.TemplateRevision, hash string, t types.InstanceTemplate, cause string, now time.Time, limit int) []types.TemplateRevision {
	var next int64 = 1
	for _, h := range hist {
		next = max(next, h.Revision+1)
	}
	if n := len(hist); n > 0 && hist[n-1].Hash == hash {
		return hist
	}
	out := make([]types.TemplateRevision, 0, len(hist)+1)
	entry := types.TemplateRevision{Revision: next, Hash: hash, ChangeCause: cause, CreatedAt: now.UTC().Truncate(time.Second), Template: t}
	for _, h := range hist {
		if h.Hash == hash {
			entry.ChangeCause, entry.CreatedAt = cmp.Or(cause, h.ChangeCause), h.CreatedAt
			continue
		}
		out = append(out, h)
	}
	out = append(out, entry)
	if len(out) > limit {
		out = slices.Clone(out[len(out)-limit:])
	}
	return out
}

// FindRevision returns the history entry with number rev, or, with rev 0,
// the one before the current template: what `nexus rollout undo` goes back
// to. ok is false when there is none.
func FindRevision(w *types.Workload, rev int64) (types.TemplateRevision, bool) {
	hist := w.Status.History
	if rev == 0 {
		cur := TemplateHash(&w.Spec.Template)
		for i := len(hist) - 1; i >= 0; i-- {
			if hist[i].Hash != cur {
				return hist[i], true
			}
		}
		return types.TemplateRevision{}, false
	}
	for _, h := range hist {
		if h.Revision == rev {
			return h, true
		}
	}
	return types.TemplateRevision{}, false
}
