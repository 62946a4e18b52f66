package ebpf

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"nexus.dev/nexus/networking/lb"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestPlaceSlots(t *testing.T) {
	a, b, c, d, e := ap("10.0.0.1:1"), ap("10.0.0.2:1"), ap("10.0.0.3:1"), ap("10.0.0.4:1"), ap("10.0.0.5:1")
	for name, tc := range map[string]struct {
		old, want, next []netip.AddrPort
	}{
		"from nothing":        {nil, []netip.AddrPort{a, b}, []netip.AddrPort{a, b}},
		"unchanged":           {[]netip.AddrPort{a, b, c}, []netip.AddrPort{c, a, b}, []netip.AddrPort{a, b, c}},
		"append":              {[]netip.AddrPort{a, b}, []netip.AddrPort{a, b, c}, []netip.AddrPort{a, b, c}},
		"replace in place":    {[]netip.AddrPort{a, b, c}, []netip.AddrPort{a, d, c}, []netip.AddrPort{a, d, c}},
		"last moves to hole":  {[]netip.AddrPort{a, b, c, d}, []netip.AddrPort{a, c, d}, []netip.AddrPort{a, d, c}},
		"holes at the end":    {[]netip.AddrPort{a, b, c, d}, []netip.AddrPort{a, b}, []netip.AddrPort{a, b}},
		"holes everywhere":    {[]netip.AddrPort{a, b, c, d, e}, []netip.AddrPort{c, e}, []netip.AddrPort{e, c}},
		"all gone":            {[]netip.AddrPort{a, b}, nil, []netip.AddrPort{}},
		"duplicates":          {nil, []netip.AddrPort{a, a, b}, []netip.AddrPort{a, b}},
		"v4-mapped is the v4": {[]netip.AddrPort{a}, []netip.AddrPort{ap("[::ffff:10.0.0.1]:1")}, []netip.AddrPort{a}},
	} {
		if got := placeSlots(tc.old, tc.want); !slices.Equal(got, tc.next) {
			t.Errorf("%s: placeSlots(%v, %v) = %v, want %v", name, tc.old, tc.want, got, tc.next)
		}
	}
}

// The plan's writes, played in order on a model of the maps, never leave
// a slot a program could pick (below the frontend's count) empty or
// holding a backend that is being removed.
func TestPlanOrderNeverExposesARemovedBackend(t *testing.T) {
	fe := lb.Frontend{Addr: ap("10.96.0.1:80"), Proto: lb.TCP}
	a, b, c, d := ap("10.0.0.1:1"), ap("10.0.0.2:1"), ap("10.0.0.3:1"), ap("10.0.0.4:1")
	steps := [][]netip.AddrPort{{a, b, c, d}, {a, c}, {b}, {a, b, c, d}, {d}, {}, {a}}
	cur := map[lb.Frontend]*frontendState{}
	id := uint32(1)
	count := uint32(0)
	slots := map[uint32]lbBackend{}
	for _, want := range steps {
		ch, next, nextID := plan(cur, lb.Table{{Frontend: fe, Backends: want}}, id)
		wanted := map[lbBackend]bool{}
		for _, w := range want {
			wanted[backendOf(w)] = true
		}
		check := func(when string) {
			for i := range count {
				be, ok := slots[i]
				if !ok {
					t.Fatalf("going to %v, %s: slot %d of %d is empty", want, when, i, count)
				}
				if !wanted[be] {
					t.Fatalf("going to %v, %s: slot %d holds %v, which is being removed", want, when, i, be)
				}
			}
		}
		for i, k := range ch.slotPutKeys {
			slots[k.Slot] = ch.slotPutVals[i]
		}
		if len(want) > 0 {
			// Without backends, only the count going to 0 can help.
			check("after the slot writes")
		}
		for i := range ch.frontendPut {
			count = ch.frontendVal[i].Count
		}
		check("after the new count")
		for _, k := range ch.slotDel {
			if k.Slot < count {
				t.Fatalf("going to %v: slot %d deleted below the count %d", want, k.Slot, count)
			}
			delete(slots, k.Slot)
		}
		check("at the end")
		if len(slots) != len(want) || int(count) != len(want) {
			t.Fatalf("going to %v: %d slots, count %d", want, len(slots), count)
		}
		cur, id = next, nextID
	}
}

func TestPlanRemovesEverythingOfAFrontend(t *testing.T) {
	fe := lb.Frontend{Addr: ap("10.96.0.1:80"), Proto: lb.TCP}
	other := lb.Frontend{Addr: ap("10.96.0.2:80"), Proto: lb.TCP}
	table := lb.Table{
		{Frontend: fe, Backends: []netip.AddrPort{ap("10.0.0.1:1"), ap("10.0.0.2:1")}, Affinity: time.Hour},
		{Frontend: other, Backends: []netip.AddrPort{ap("10.0.0.3:1")}},
	}
	_, cur, id := plan(nil, table, 1)
	ch, next, _ := plan(cur, table[1:], id)
	feID := cur[fe].id
	if len(ch.frontendDel) != 1 || ch.frontendDel[0] != frontendKey(fe) || len(ch.slotDel) != 2 || len(ch.memberDel) != 2 ||
		!ch.dropAffinities[feID] || !ch.dropOrigins[feID] || len(ch.slotPutKeys)+len(ch.frontendPut)+len(ch.memberPut) != 0 {
		t.Errorf("removing %s planned %+v", fe, ch)
	}
	if _, ok := next[fe]; ok || next[other].id != cur[other].id {
		t.Errorf("state after removing %s: %v", fe, next)
	}
	// Turning affinity off drops the frontend's affinities, and only them.
	table[0].Affinity = 0
	ch, _, _ = plan(cur, table, id)
	if !ch.dropAffinities[feID] || len(ch.dropOrigins) != 0 || len(ch.frontendPut) != 1 || len(ch.slotPutKeys) != 0 {
		t.Errorf("turning affinity off planned %+v", ch)
	}
}

func TestSameBackends(t *testing.T) {
	a, b, c := ap("10.0.0.1:1"), ap("10.0.0.2:1"), ap("10.0.0.3:1")
	many := func(extra ...netip.AddrPort) []netip.AddrPort {
		var out []netip.AddrPort
		for i := range 20 {
			out = append(out, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), 1))
		}
		return append(out, extra...)
	}
	for _, tc := range []struct {
		slots, want []netip.AddrPort
		same        bool
	}{
		{nil, nil, true},
		{[]netip.AddrPort{a, b}, []netip.AddrPort{b, a}, true},
		{[]netip.AddrPort{a, b}, []netip.AddrPort{b, a, a}, true},
		{[]netip.AddrPort{a}, []netip.AddrPort{ap("[::ffff:10.0.0.1]:1")}, true},
		{[]netip.AddrPort{a, b}, []netip.AddrPort{a}, false},
		{[]netip.AddrPort{a, b}, []netip.AddrPort{a, c}, false},
		{[]netip.AddrPort{a, b}, []netip.AddrPort{a, b, c}, false},
		{many(), many(), true},
		{many(), many(a), false},
		{many(a), many(b), false},
	} {
		if got := sameBackends(tc.slots, tc.want); got != tc.same {
			t.Errorf("sameBackends(%v, %v) = %v", tc.slots, tc.want, got)
		}
	}
}
