// Package storetest checks an etcd-compatible store from the outside, the
// way its users see it: concurrent clients (etcd's own clientv3) run a
// key-value workload while faults are injected, the history is recorded
// and checked for linearizability with porcupine, and watch streams are
// checked for order, gaps and duplicates. It is written against the etcd
// API only, so the same checks run against Nexus's store and against etcd.
package storetest

import (
	"fmt"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// OpKind is a client operation of the workload.
type OpKind uint8

const (
	OpGet OpKind = iota // linearizable read of one key
	OpPut
	OpDelete
	OpCAS // txn: if value == Expect then put Value
)

func (k OpKind) String() string {
	return [...]string{"get", "put", "delete", "cas"}[k]
}

// Input is an operation as the client issued it.
type Input struct {
	Kind   OpKind
	Key    string
	Value  string
	Expect string
}

// Output is what the client observed. Unknown marks a write whose outcome
// the client could not learn (timeout, lost connection): it may or may not
// have taken effect, and its return time is the end of the history.
type Output struct {
	Value   string
	Found   bool
	OK      bool // CAS succeeded
	Unknown bool
}

// keyState is one key's value in the model.
type keyState struct {
	value  string
	exists bool
}

// KVModel is the sequential specification of a single-key register with
// get, put, delete and compare-and-swap, partitioned by key.
var KVModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(Input).Key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return keyState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(keyState), input.(Input), output.(Output)
		switch in.Kind {
		case OpGet:
			if out.Found != st.exists {
				return false, st
			}
			return !st.exists || out.Value == st.value, st
		case OpPut:
			return true, keyState{value: in.Value, exists: true}
		case OpDelete:
			return true, keyState{}
		case OpCAS:
			matches := st.exists && st.value == in.Expect
			if !out.Unknown && out.OK != matches {
				return false, st
			}
			if matches {
				return true, keyState{value: in.Value, exists: true}
			}
			return true, st
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		switch {
		case out.Unknown:
			return fmt.Sprintf("%s(%s) -> ?", in.Kind, in.Key)
		case in.Kind == OpGet && !out.Found:
			return fmt.Sprintf("get(%s) -> none", in.Key)
		case in.Kind == OpGet:
			return fmt.Sprintf("get(%s) -> %s", in.Key, out.Value)
		case in.Kind == OpCAS:
			return fmt.Sprintf("cas(%s, %s -> %s) -> %v", in.Key, in.Expect, in.Value, out.OK)
		}
		return fmt.Sprintf("%s(%s, %s)", in.Kind, in.Key, in.Value)
	},
}

// CheckWatchRevisions checks the revisions a watch delivered for a
// workload whose every write touches one key: strictly increasing, no gap,
// no duplicate. first is the revision the watch started from.
func CheckWatchRevisions(first int64, revs []int64) error {
	want := first
	for i, r := range revs {
		switch {
		case r < want:
			return fmt.Errorf("event %d: revision %d again or out of order (expected %d)", i, r, want)
		case r > want:
			return fmt.Errorf("event %d: revision %d skips %d..%d", i, r, want, r-1)
		}
		want++
	}
	return nil
}

// WatchRevisions reads a watch until it has delivered revision last and
// returns the mod revision of every event, for CheckWatchRevisions. It
// fails if the watch errors or stalls for stall.
func WatchRevisions(ch clientv3.WatchChan, last int64, stall time.Duration) ([]int64, error) {
	var revs []int64
	for len(revs) == 0 || revs[len(revs)-1] < last {
		select {
		case resp, ok := <-ch:
			if !ok {
				return revs, fmt.Errorf("watch closed after %d events", len(revs))
			}
			if err := resp.Err(); err != nil {
				return revs, fmt.Errorf("watch: %w", err)
			}
			for _, ev := range resp.Events {
				revs = append(revs, ev.Kv.ModRevision)
			}
		case <-time.After(stall):
			return revs, fmt.Errorf("watch stalled after %d events (want up to revision %d)", len(revs), last)
		}
	}
	return revs, nil
}
