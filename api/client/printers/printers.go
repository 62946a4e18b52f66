// Package printers shows API objects to people: tables with a few columns
// per kind (as kubectl does), JSON, YAML, kind/name lines, and the
// multi-line `describe` view. It is shared by the command line and
// anything else that prints objects; it never shows a Secret's values in
// a table or a description.
package printers

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"nexus.dev/nexus/api/client"
	"nexus.dev/nexus/api/types"
)

// Format is an output format.
type Format string

const (
	Table Format = "table"
	Wide  Format = "wide"
	JSON  Format = "json"
	YAML  Format = "yaml"
	Name  Format = "name"
)

// Formats lists the formats, for help texts and completion.
var Formats = []Format{Table, Wide, JSON, YAML, Name}

// ParseFormat reads a format name ("" is Table).
func ParseFormat(s string) (Format, error) {
	if s == "" {
		return Table, nil
	}
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("unknown output format %q: use table, wide, json, yaml or name", s)
}

// Options adjust a Printer.
type Options struct {
	Format Format
	// AllNamespaces adds a NAMESPACE column to tables.
	AllNamespaces bool
	// NoHeaders leaves out the header row of tables.
	NoHeaders bool
	// WatchEvents shows each event's type: an EVENT column in tables, and
	// {"type", "object"} documents in JSON and YAML.
	WatchEvents bool
	// Now is the clock ages are computed against (default time.Now).
	Now func() time.Time
	// Endpoints are the Endpoints of the Services printed, for their
	// ENDPOINTS column (ready/total backends); a Service without its
	// Endpoints shows <none>.
	Endpoints []*types.Endpoints
}

// Printer writes objects in one format. Tables printed across calls (a
// watch) keep their header and column widths.
type Printer struct {
	w         io.Writer
	o         Options
	endpoints map[string]*types.Endpoints // by namespace/name
	tables    map[string]*table
	docs      int // JSON or YAML documents written
}

// New returns a printer writing to w.
func New(w io.Writer, o Options) *Printer {
	if o.Format == "" {
		o.Format = Table
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	p := &Printer{w: w, o: o, tables: map[string]*table{}, endpoints: map[string]*types.Endpoints{}}
	for _, ep := range o.Endpoints {
		p.endpoints[ep.Namespace+"/"+ep.Name] = ep
	}
	return p
}

func (p *Printer) env() rowEnv { return rowEnv{now: p.o.Now(), endpoints: p.endpoints} }

// Ref is how an object is named in output: "workload/web".
func Ref(o types.Object) string {
	r := types.ResourceOf(o)
	if r == nil {
		return o.GetObjectMeta().Name
	}
	return r.Singular + "/" + o.GetObjectMeta().Name
}

// Print writes a listing. With JSON or YAML, one object is written as it
// is when single is set, and anything else as a List.
func (p *Printer) Print(objs []types.Object, single bool) error {
	switch p.o.Format {
	case JSON, YAML:
		var v any = list(objs)
		if single && len(objs) == 1 {
			v = objs[0]
		}
		return p.document(v)
	case Name:
		for _, o := range objs {
			if _, err := fmt.Fprintln(p.w, Ref(o)); err != nil {
				return err
			}
		}
		return nil
	}
	// Tables: one per kind, in the order the kinds come, blank-separated.
	var order []string
	byKind := map[string][]types.Object{}
	for _, o := range objs {
		k := o.GetTypeMeta().Kind
		if _, ok := byKind[k]; !ok {
			order = append(order, k)
		}
		byKind[k] = append(byKind[k], o)
	}
	for i, k := range order {
		if i > 0 {
			fmt.Fprintln(p.w)
		}
		t := p.table(k)
		for _, o := range byKind[k] {
			t.add(t.row(string(client.Added), o, p.env()))
		}
		if err := t.flush(p.w, p.o.NoHeaders); err != nil {
			return err
		}
	}
	return nil
}

// PrintInitial writes the objects a watch starts with: a table in one
// piece (aligned, ADDED in the EVENT column), other formats as one ADDED
// event each, as the changes that follow are written.
func (p *Printer) PrintInitial(objs []types.Object) error {
	if p.o.Format != Table && p.o.Format != Wide {
		for _, o := range objs {
			if err := p.PrintEvent(client.Event{Type: client.Added, Object: o}); err != nil {
				return err
			}
		}
		return nil
	}
	return p.Print(objs, false)
}

// PrintEvent writes one event of a watch.
func (p *Printer) PrintEvent(ev client.Event) error {
	switch p.o.Format {
	case JSON, YAML:
		if p.o.WatchEvents {
			return p.document(struct {
				Type   client.EventType `json:"type"`
				Object types.Object     `json:"object"`
			}{ev.Type, ev.Object})
		}
		return p.document(ev.Object)
	case Name:
		if p.o.WatchEvents {
			_, err := fmt.Fprintf(p.w, "%s %s\n", ev.Type, Ref(ev.Object))
			return err
		}
		_, err := fmt.Fprintln(p.w, Ref(ev.Object))
		return err
	}
	t := p.table(ev.Object.GetTypeMeta().Kind)
	t.add(t.row(string(ev.Type), ev.Object, p.env()))
	return t.flush(p.w, p.o.NoHeaders)
}

func list(objs []types.Object) any {
	if objs == nil {
		objs = []types.Object{}
	}
	return struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Items      []types.Object `json:"items"`
	}{types.APIVersion, "List", objs}
}

// document writes v as indented JSON, or as a YAML document ("---"
// between documents).
func (p *Printer) document(v any) error {
	js, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	if p.o.Format == JSON {
		_, err = fmt.Fprintf(p.w, "%s\n", js)
		return err
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		return err
	}
	if p.docs > 0 {
		if _, err := fmt.Fprintln(p.w, "---"); err != nil {
			return err
		}
	}
	p.docs++
	_, err = p.w.Write(y)
	return err
}

// YAMLOf is an object as YAML, the form `get -o yaml` and `edit` show.
func YAMLOf(o types.Object) ([]byte, error) {
	js, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

func (p *Printer) table(kind string) *table {
	t, ok := p.tables[kind]
	if ok {
		return t
	}
	r, _ := types.LookupResource(kind)
	namespaced := r != nil && r.Namespaced
	t = newTable(columnsOf(kind, p.o.Format == Wide), p.o.AllNamespaces && namespaced, p.o.WatchEvents)
	p.tables[kind] = t
	return t
}

// table lays rows out in columns. Rows already written cannot move, so
// later rows (a watch) are padded to the widths seen so far, which only
// grow.
type table struct {
	cols        []column
	namespace   bool
	event       bool
	header      []string
	widths      []int
	pending     [][]string
	wroteHeader bool
}

// newTable is a table of cols, after an EVENT column when event and a
// NAMESPACE one when namespace.
func newTable(cols []column, namespace, event bool) *table {
	t := &table{cols: cols, namespace: namespace, event: event}
	if event {
		t.header = append(t.header, "EVENT")
	}
	if namespace {
		t.header = append(t.header, "NAMESPACE")
	}
	for _, c := range cols {
		t.header = append(t.header, c.name)
	}
	return t
}

// row is o's row of the table (event fills the EVENT column).
func (t *table) row(event string, o types.Object, env rowEnv) []string {
	var row []string
	if t.event {
		row = append(row, event)
	}
	if t.namespace {
		row = append(row, o.GetObjectMeta().Namespace)
	}
	for _, c := range t.cols {
		row = append(row, c.value(o, env))
	}
	return row
}

func (t *table) add(row []string) { t.pending = append(t.pending, row) }

func (t *table) flush(w io.Writer, noHeaders bool) error {
	rows := t.pending
	t.pending = nil
	if !t.wroteHeader && !noHeaders {
		rows = append([][]string{t.header}, rows...)
	}
	t.wroteHeader = true
	if t.widths == nil {
		t.widths = make([]int, len(t.header))
	}
	for _, r := range rows {
		for i, cell := range r {
			t.widths[i] = max(t.widths[i], len(cell))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, cell := range r {
			if i == len(r)-1 {
				b.WriteString(cell)
				break
			}
			b.WriteString(cell)
			b.WriteString(strings.Repeat(" ", t.widths[i]-len(cell)+3))
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Age is how long ago t was, as tables show it: 45s, 3m12s, 5h, 12d.
func Age(t, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return HumanDuration(now.Sub(t))
}

// HumanDuration writes d the way kubectl writes ages: precise while it
// is short, coarser as it grows.
func HumanDuration(d time.Duration) string {
	seconds := int(d.Seconds())
	switch {
	case seconds < -1:
		return "<invalid>"
	case seconds < 0:
		return "0s"
	case seconds < 120:
		return fmt.Sprintf("%ds", seconds)
	}
	minutes := int(d.Minutes())
	switch {
	case minutes < 10:
		if s := seconds % 60; s != 0 {
			return fmt.Sprintf("%dm%ds", minutes, s)
		}
		return fmt.Sprintf("%dm", minutes)
	case minutes < 180:
		return fmt.Sprintf("%dm", minutes)
	}
	hours := int(d.Hours())
	switch {
	case hours < 8:
		if m := minutes % 60; m != 0 {
			return fmt.Sprintf("%dh%dm", hours, m)
		}
		return fmt.Sprintf("%dh", hours)
	case hours < 48:
		return fmt.Sprintf("%dh", hours)
	case hours < 24*8:
		if h := hours % 24; h != 0 {
			return fmt.Sprintf("%dd%dh", hours/24, h)
		}
		return fmt.Sprintf("%dd", hours/24)
	case hours < 24*365*2:
		return fmt.Sprintf("%dd", hours/24)
	case hours < 24*365*8:
		if dy := hours / 24 % 365; dy != 0 {
			return fmt.Sprintf("%dy%dd", hours/24/365, dy)
		}
		return fmt.Sprintf("%dy", hours/24/365)
	}
	return fmt.Sprintf("%dy", hours/24/365)
}
