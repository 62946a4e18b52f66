package printers

import (
	"cmp"
	"io"
	"slices"
	"strings"
	"time"

	"nexus.dev/nexus/api/types"
)

// Processes writes instances the way `nexus ps` lists them, one line each
// with where it runs and how it is doing: workload, node, every address,
// phase, ready, restarts and age, sorted by namespace, workload and name.
func Processes(w io.Writer, insts []*types.Instance, o Options) error {
	if o.Now == nil {
		o.Now = time.Now
	}
	now := o.Now()
	insts = slices.Clone(insts)
	slices.SortFunc(insts, func(a, b *types.Instance) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Spec.Workload, b.Spec.Workload), cmp.Compare(a.Name, b.Name))
	})
	t := newTable(processColumns, o.AllNamespaces, false)
	for _, i := range insts {
		t.add(t.row("", i, rowEnv{now: now}))
	}
	return t.flush(w, o.NoHeaders)
}

var processColumns = []column{
	nameCol(), instanceWorkloadCol, instanceNodeCol,
	typed("ADDRESSES", func(i *types.Instance) string { return orNone(strings.Join(i.Status.Addresses, ",")) }),
	instancePhaseCol,
	typed("READY", func(i *types.Instance) string {
		if i.Status.Ready {
			return "yes"
		}
		return "no"
	}),
	instanceRestartsCol, ageCol(),
}
