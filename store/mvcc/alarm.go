package mvcc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Alarms are etcd's: each is raised by one member (an AlarmMember: member
// ID and alarm type) through raft, so every member holds the same set, and
// they are kept in the meta bucket, so they survive a restart. While any
// NOSPACE alarm is raised the store refuses what would add data (puts,
// transactions with a put in either branch, lease grants) with
// ErrGRPCNoSpace, as etcd's capped applier does; deletes, compaction and
// lease revokes still go through, so an operator can make room.
//
// Whether a member is over its quota is not decided here: it depends on
// the size of that member's database file, which differs between members
// and is not replicated state. The store server checks it (QuotaCost, Size)
// and proposes the alarm.

// metaAlarmPrefix starts the meta key of each raised alarm: the prefix,
// the member ID (8 bytes) and the alarm type (4 bytes), big-endian, so the
// alarms load in a fixed order.
var metaAlarmPrefix = []byte("alarm/")

// legacyNoSpaceKey is where stores before per-member alarms recorded a
// NOSPACE alarm they raised themselves from the logical data size. The
// server now raises NOSPACE from the file size, again at the next write if
// the file is still over its quota, so Open drops the old record.
var legacyNoSpaceKey = []byte("alarm_nospace")

// Quota costs are etcd's estimates (etcdserver/quota.go) of what a record
// adds to the database beyond its key and value, so that a quota check
// here agrees with etcd's for the same requests.
const (
	kvOverhead    = 256
	leaseOverhead = 64
)

func alarmKey(m *etcdserverpb.AlarmMember) []byte {
	k := append([]byte(nil), metaAlarmPrefix...)
	k = binary.BigEndian.AppendUint64(k, m.MemberID)
	return binary.BigEndian.AppendUint32(k, uint32(m.Alarm))
}

// loadAlarms reads the raised alarms from the meta bucket.
func loadAlarms(meta *bolt.Bucket) ([]*etcdserverpb.AlarmMember, error) {
	var out []*etcdserverpb.AlarmMember
	c := meta.Cursor()
	for k, _ := c.Seek(metaAlarmPrefix); k != nil && bytes.HasPrefix(k, metaAlarmPrefix); k, _ = c.Next() {
		rest := k[len(metaAlarmPrefix):]
		if len(rest) != 12 {
			return nil, fmt.Errorf("meta key %q is not an alarm record", k)
		}
		out = append(out, &etcdserverpb.AlarmMember{
			MemberID: binary.BigEndian.Uint64(rest[:8]),
			Alarm:    etcdserverpb.AlarmType(binary.BigEndian.Uint32(rest[8:])),
		})
	}
	return out, nil
}

// QuotaCost is what applying r is expected to add to the database, by
// etcd's estimate: a put costs its key, its value and 256 bytes; a
// transaction the dearer of its two branches (nested transactions
// included); a lease grant 64 bytes. Requests that add nothing (reads,
// deletes, compaction, revokes, alarms) cost 0.
func QuotaCost(r *etcdserverpb.InternalRaftRequest) int64 {
	switch {
	case r == nil:
		return 0
	case r.Put != nil:
		return putCost(r.Put)
	case r.Txn != nil:
		return txnCost(r.Txn)
	case r.LeaseGrant != nil:
		return leaseOverhead
	}
	return 0
}

func putCost(p *etcdserverpb.PutRequest) int64 {
	return int64(kvOverhead + len(p.Key) + len(p.Value))
}

func txnCost(rt *etcdserverpb.TxnRequest) int64 {
	branchCost := func(ops []*etcdserverpb.RequestOp) int64 {
		var cost int64
		for _, op := range ops {
			if p := op.GetRequestPut(); p != nil {
				cost += putCost(p)
			}
			if t := op.GetRequestTxn(); t != nil {
				cost += txnCost(t)
			}
		}
		return cost
	}
	return max(branchCost(rt.Success), branchCost(rt.Failure))
}

// Alarms returns the raised alarms, ordered by member and type.
func (s *Store) Alarms() []*etcdserverpb.AlarmMember {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return cloneAlarms(s.alarms, etcdserverpb.AlarmType_NONE)
}

// cloneAlarms copies the alarms of type t (all of them for NONE).
func cloneAlarms(alarms []*etcdserverpb.AlarmMember, t etcdserverpb.AlarmType) []*etcdserverpb.AlarmMember {
	var out []*etcdserverpb.AlarmMember
	for _, a := range alarms {
		if t == etcdserverpb.AlarmType_NONE || a.Alarm == t {
			out = append(out, &etcdserverpb.AlarmMember{MemberID: a.MemberID, Alarm: a.Alarm})
		}
	}
	return out
}

// noSpace reports whether a NOSPACE alarm is raised; the caller holds s.mu.
func (s *Store) noSpace() bool {
	return slices.ContainsFunc(s.alarms, func(a *etcdserverpb.AlarmMember) bool { return a.Alarm == etcdserverpb.AlarmType_NOSPACE })
}

// capped fails a request that would add cost bytes while a NOSPACE alarm
// is raised.
func (w *writer) capped(cost int64) error {
	if cost > 0 && w.s.noSpace() {
		return rpctypes.ErrGRPCNoSpace
	}
	return nil
}

func alarmIndex(alarms []*etcdserverpb.AlarmMember, m *etcdserverpb.AlarmMember) (int, bool) {
	return slices.BinarySearchFunc(alarms, m, func(a, b *etcdserverpb.AlarmMember) int {
		if a.MemberID != b.MemberID {
			if a.MemberID < b.MemberID {
				return -1
			}
			return 1
		}
		return int(a.Alarm) - int(b.Alarm)
	})
}

// alarm applies an AlarmRequest as etcd does: ACTIVATE answers with the
// alarm (raised now or before), DEACTIVATE with the alarm it cleared (none
// if it was not raised), GET with the raised alarms of the given type.
func (w *writer) alarm(a *etcdserverpb.AlarmRequest) (*etcdserverpb.AlarmResponse, error) {
	resp := &etcdserverpb.AlarmResponse{Header: w.header()}
	m := &etcdserverpb.AlarmMember{MemberID: a.MemberID, Alarm: a.Alarm}
	switch a.Action {
	case etcdserverpb.AlarmRequest_GET:
		resp.Alarms = cloneAlarms(w.s.alarms, a.Alarm)
	case etcdserverpb.AlarmRequest_ACTIVATE:
		switch a.Alarm {
		case etcdserverpb.AlarmType_NONE:
			return resp, nil
		case etcdserverpb.AlarmType_NOSPACE:
		default:
			// Only NOSPACE has a meaning here (etcd's CORRUPT comes from
			// its own corruption check, which this store does not run).
			return nil, ErrUnsupported
		}
		if i, found := alarmIndex(w.s.alarms, m); !found {
			w.s.alarms = slices.Insert(w.s.alarms, i, m)
			w.check(w.metab.Put(alarmKey(m), []byte{1}))
		}
		resp.Alarms = []*etcdserverpb.AlarmMember{{MemberID: m.MemberID, Alarm: m.Alarm}}
	case etcdserverpb.AlarmRequest_DEACTIVATE:
		if i, found := alarmIndex(w.s.alarms, m); found {
			w.s.alarms = slices.Delete(w.s.alarms, i, i+1)
			w.check(w.metab.Delete(alarmKey(m)))
			resp.Alarms = []*etcdserverpb.AlarmMember{m}
		}
	default:
		return nil, ErrUnsupported
	}
	return resp, nil
}
