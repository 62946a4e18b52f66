package ebpf

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	"nexus.dev/nexus/networking/lb"
)

// frontendState is what the maps hold for one frontend.
type frontendState struct {
	id       uint32
	slots    []netip.AddrPort // slot i holds slots[i]
	affinity time.Duration
}

// Sync makes the maps serve exactly t. Only what differs from the last
// Sync is written, in an order that never lets a program pick a backend
// that is being removed or a slot that is not written yet: new backends
// first, then the frontends' counts, then the removals.
func (d *DataPath) Sync(t lb.Table) error {
	if err := t.Validate(); err != nil {
		return fmt.Errorf("ebpf: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	if err := d.fits(t); err != nil {
		return err
	}
	if d.broken {
		if err := d.clear(); err != nil {
			return err
		}
		d.broken = false
	}
	c, next, nextID := plan(d.frontends, t, d.nextID)
	if err := d.apply(c); err != nil {
		d.broken = true
		return fmt.Errorf("%w (the next Sync rewrites every map)", err)
	}
	d.frontends, d.nextID = next, nextID
	return nil
}

// fits refuses a table the maps cannot hold before anything is written.
func (d *DataPath) fits(t lb.Table) error {
	if n, max := len(t), int(d.objs.Frontends.MaxEntries()); n > max {
		return fmt.Errorf("ebpf: %d frontends, the data path holds at most %d", n, max)
	}
	backends := 0
	for _, e := range t {
		backends += len(e.Backends)
	}
	if max := int(d.objs.Slots.MaxEntries()); backends > max {
		return fmt.Errorf("ebpf: %d backends over all frontends, the data path holds at most %d", backends, max)
	}
	return nil
}

// changes are the map writes of one Sync, applied in field order.
type changes struct {
	frontendDel []lbFrontendKey
	memberPut   []lbMemberKey
	slotPutKeys []lbSlotKey
	slotPutVals []lbBackend
	frontendPut []lbFrontendKey
	frontendVal []lbFrontend
	slotDel     []lbSlotKey
	memberDel   []lbMemberKey
	// Frontend ids whose affinities, and origins, are dropped.
	dropAffinities map[uint32]bool
	dropOrigins    map[uint32]bool
}

// plan works out the writes that turn the maps for cur into the maps for
// t, and the state after them. It does no I/O.
func plan(cur map[lb.Frontend]*frontendState, t lb.Table, nextID uint32) (c changes, next map[lb.Frontend]*frontendState, _ uint32) {
	c.dropAffinities, c.dropOrigins = map[uint32]bool{}, map[uint32]bool{}
	next = make(map[lb.Frontend]*frontendState, len(t))
	for _, e := range t {
		st, existed := cur[e.Frontend]
		if existed && st.affinity == e.Affinity && sameBackends(st.slots, e.Backends) {
			next[e.Frontend] = st // most of a table, most of the time
			continue
		}
		if !existed {
			st = &frontendState{id: nextID}
			// Ids are not reused soon, so an entry a program adds while
			// its frontend is being removed never counts for a new one.
			nextID++
		}
		slots := placeSlots(st.slots, e.Backends)
		c.addBackends(st.id, st.slots, slots)
		if !existed || len(slots) != len(st.slots) || e.Affinity != st.affinity {
			c.frontendPut = append(c.frontendPut, frontendKey(e.Frontend))
			c.frontendVal = append(c.frontendVal, lbFrontend{Id: st.id, Count: uint32(len(slots)), AffinityNs: uint64(e.Affinity)})
		}
		c.removeBackends(st.id, st.slots, slots)
		if st.affinity > 0 && e.Affinity == 0 {
			c.dropAffinities[st.id] = true
		}
		next[e.Frontend] = &frontendState{id: st.id, slots: slots, affinity: e.Affinity}
	}
	for f, st := range cur {
		if _, kept := next[f]; kept {
			continue
		}
		c.frontendDel = append(c.frontendDel, frontendKey(f))
		c.removeBackends(st.id, st.slots, nil)
		c.dropAffinities[st.id] = true
		c.dropOrigins[st.id] = true
	}
	return c, next, nextID
}

// addBackends writes the slots that change from old to slots, and the
// members that are new. A slot beyond the new count that holds a backend
// being removed is pointed at a staying one first: it stays selectable
// until the frontend's count shrinks.
func (c *changes) addBackends(id uint32, old, slots []netip.AddrPort) {
	had := setOf(old)
	stays := setOf(slots)
	for _, b := range slots {
		if !had[b] {
			c.memberPut = append(c.memberPut, lbMemberKey{Id: id, Backend: backendOf(b)})
		}
	}
	for i, b := range slots {
		if i >= len(old) || old[i] != b {
			c.putSlot(id, i, b)
		}
	}
	if len(slots) == 0 {
		return
	}
	for i := len(slots); i < len(old); i++ {
		if !stays[old[i]] {
			c.putSlot(id, i, slots[0])
		}
	}
}

func (c *changes) putSlot(id uint32, i int, b netip.AddrPort) {
	c.slotPutKeys = append(c.slotPutKeys, lbSlotKey{Id: id, Slot: uint32(i)})
	c.slotPutVals = append(c.slotPutVals, backendOf(b))
}

// removeBackends deletes the slots beyond the new count and the members
// that are gone.
func (c *changes) removeBackends(id uint32, old, slots []netip.AddrPort) {
	stays := setOf(slots)
	for i := len(slots); i < len(old); i++ {
		c.slotDel = append(c.slotDel, lbSlotKey{Id: id, Slot: uint32(i)})
	}
	for _, b := range old {
		if !stays[b] {
			c.memberDel = append(c.memberDel, lbMemberKey{Id: id, Backend: backendOf(b)})
		}
	}
}

// placeSlots lays want out in slots 0 .. n-1: a backend of old that stays
// keeps its slot, new ones fill the slots of removed ones, and the last
// slots move into the holes left. A backend listed twice gets one slot.
func placeSlots(old, want []netip.AddrPort) []netip.AddrPort {
	wanted := setOf(want)
	next := make([]netip.AddrPort, 0, max(len(old), len(want)))
	var holes []int
	for i, b := range old {
		next = append(next, b)
		if !wanted[b] {
			holes = append(holes, i)
		}
	}
	placed := setOf(old)
	for _, b := range want {
		b = normal(b)
		if placed[b] {
			continue
		}
		placed[b] = true
		if len(holes) > 0 {
			next[holes[0]] = b
			holes = holes[1:]
		} else {
			next = append(next, b)
		}
	}
	for len(holes) > 0 {
		last := len(next) - 1
		if holes[len(holes)-1] == last {
			holes = holes[:len(holes)-1]
		} else {
			next[holes[0]] = next[last]
			holes = holes[1:]
		}
		next = next[:last]
	}
	return next
}

// sameBackends reports whether want lists the backends of slots, each at
// least once, and no other. Short lists, the usual ones, are compared
// without allocating.
func sameBackends(slots, want []netip.AddrPort) bool {
	if len(want) < len(slots) {
		return false
	}
	if len(slots) > 16 {
		return maps.Equal(setOf(slots), setOf(want))
	}
	for _, w := range want {
		if !slices.Contains(slots, normal(w)) {
			return false
		}
	}
	for _, s := range slots {
		if !slices.ContainsFunc(want, func(w netip.AddrPort) bool { return normal(w) == s }) {
			return false
		}
	}
	return true
}

// normal writes an IPv4 address one way (not v4-mapped), as the maps do.
func normal(b netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(b.Addr().Unmap(), b.Port())
}

func setOf(bs []netip.AddrPort) map[netip.AddrPort]bool {
	s := make(map[netip.AddrPort]bool, len(bs))
	for _, b := range bs {
		s[normal(b)] = true
	}
	return s
}

// apply writes c in order.
func (d *DataPath) apply(c changes) error {
	o := &d.objs
	members := make([]uint8, len(c.memberPut))
	for i := range members {
		members[i] = 1
	}
	for _, step := range []func() error{
		func() error { return batchDelete(o.Frontends, "frontends", c.frontendDel) },
		func() error { return batchUpdate(o.Members, "members", c.memberPut, members) },
		func() error { return batchUpdate(o.Slots, "slots", c.slotPutKeys, c.slotPutVals) },
		func() error { return batchUpdate(o.Frontends, "frontends", c.frontendPut, c.frontendVal) },
		func() error { return batchDelete(o.Slots, "slots", c.slotDel) },
		func() error { return batchDelete(o.Members, "members", c.memberDel) },
		func() error {
			if len(c.dropAffinities) == 0 {
				return nil
			}
			return d.purgeAffinities(func(k lbAffinityKey) bool { return c.dropAffinities[k.Id] })
		},
		func() error {
			if len(c.dropOrigins) == 0 {
				return nil
			}
			return purge(o.Origins, "origins", func(_ lbOriginKey, v lbOrigin) bool { return c.dropOrigins[v.Id] })
		},
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func batchUpdate[K, V any](m *ebpf.Map, name string, keys []K, vals []V) error {
	if len(keys) == 0 {
		return nil
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("ebpf: write %d entries of map %s: %w", len(keys), name, err)
	}
	return nil
}

func batchDelete[K any](m *ebpf.Map, name string, keys []K) error {
	if len(keys) == 0 {
		return nil
	}
	if _, err := m.BatchDelete(keys, nil); err != nil {
		return fmt.Errorf("ebpf: delete %d entries of map %s: %w", len(keys), name, err)
	}
	return nil
}

func (d *DataPath) purgeAffinities(match func(lbAffinityKey) bool) error {
	return purge(d.objs.Affinities, "affinities", func(k lbAffinityKey, _ lbAffinity) bool { return match(k) })
}

// purge deletes the entries of m that match. The programs add entries
// meanwhile, and an LRU map drops old ones by itself: a key gone before
// it is deleted is fine.
func purge[K comparable, V any](m *ebpf.Map, name string, match func(K, V) bool) error {
	var (
		k    K
		v    V
		gone []K
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if match(k, v) {
			gone = append(gone, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("ebpf: read map %s: %w", name, err)
	}
	for _, k := range gone {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("ebpf: delete from map %s: %w", name, err)
		}
	}
	return nil
}

// clear empties every map but the allowed namespaces, after a Sync that
// failed half-way left them in an unknown state.
func (d *DataPath) clear() error {
	o := &d.objs
	for _, err := range []error{
		purge(o.Frontends, "frontends", func(lbFrontendKey, lbFrontend) bool { return true }),
		purge(o.Slots, "slots", func(lbSlotKey, lbBackend) bool { return true }),
		purge(o.Members, "members", func(lbMemberKey, uint8) bool { return true }),
		purge(o.Affinities, "affinities", func(lbAffinityKey, lbAffinity) bool { return true }),
		purge(o.Origins, "origins", func(lbOriginKey, lbOrigin) bool { return true }),
	} {
		if err != nil {
			return err
		}
	}
	clear(d.frontends)
	return nil
}
