package printers

import (
	"cmp"
	"io"
	"slices"
	"strconv"
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
	t := &table{header: []string{"NAME", "WORKLOAD", "NODE", "ADDRESSES", "PHASE", "READY", "RESTARTS", "AGE"}}
	if o.AllNamespaces {
		t.header = append([]string{"NAMESPACE"}, t.header...)
	}
	for _, i := range insts {
		ready := "no"
		if i.Status.Ready {
			ready = "yes"
		}
		row := []string{i.Name, orNone(i.Spec.Workload), orNone(i.Spec.NodeName), orNone(strings.Join(i.Status.Addresses, ",")),
			orNone(string(i.Status.Phase)), ready, strconv.Itoa(int(i.Status.Restarts)), Age(i.CreationTimestamp, now)}
		if o.AllNamespaces {
			row = append([]string{i.Namespace}, row...)
		}
		t.add(row)
	}
	return t.flush(w, o.NoHeaders)
}
