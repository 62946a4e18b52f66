package mvcc

import (
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// txnRequest applies a transaction the way etcd does: validate the whole
// request, evaluate every compare (nested ones included) against the state
// before the transaction, check the preconditions of the ops on the chosen
// path, and only then execute them, all in one revision.
func (w *writer) txnRequest(rt *etcdserverpb.TxnRequest) (*etcdserverpb.TxnResponse, error) {
	// As etcd's capped applier: a put in either branch is refused under
	// NOSPACE, whichever branch the compares would pick.
	if err := w.capped(txnCost(rt)); err != nil {
		return nil, err
	}
	if err := w.s.validateTxn(rt); err != nil {
		return nil, err
	}
	path := w.compareToPath(rt)
	i := 0
	if err := w.checkPath(rt, path, &i); err != nil {
		return nil, err
	}
	i = 0
	return w.execTxn(rt, path, &i), nil
}

func branch(rt *etcdserverpb.TxnRequest, succeeded bool) []*etcdserverpb.RequestOp {
	if succeeded {
		return rt.Success
	}
	return rt.Failure
}

// validateTxn checks what can be checked without the state: sizes, empty
// keys, sort options and keys written twice.
func (s *Store) validateTxn(rt *etcdserverpb.TxnRequest) error {
	maxOps := s.opts.MaxTxnOps
	if len(rt.Compare) > maxOps || len(rt.Success) > maxOps || len(rt.Failure) > maxOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range rt.Compare {
		if c == nil || len(c.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, ops := range [][]*etcdserverpb.RequestOp{rt.Success, rt.Failure} {
		for _, op := range ops {
			if err := s.validateOp(op); err != nil {
				return err
			}
		}
	}
	if _, _, err := checkIntervals(rt.Success); err != nil {
		return err
	}
	if _, _, err := checkIntervals(rt.Failure); err != nil {
		return err
	}
	return nil
}

func (s *Store) validateOp(op *etcdserverpb.RequestOp) error {
	switch v := op.GetRequest().(type) {
	case *etcdserverpb.RequestOp_RequestRange:
		if v.RequestRange == nil {
			return rpctypes.ErrGRPCKeyNotFound
		}
		return validateRange(v.RequestRange)
	case *etcdserverpb.RequestOp_RequestPut:
		if v.RequestPut == nil {
			return rpctypes.ErrGRPCKeyNotFound
		}
		return validatePut(v.RequestPut)
	case *etcdserverpb.RequestOp_RequestDeleteRange:
		if v.RequestDeleteRange == nil {
			return rpctypes.ErrGRPCKeyNotFound
		}
		if len(v.RequestDeleteRange.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
		return nil
	case *etcdserverpb.RequestOp_RequestTxn:
		if v.RequestTxn == nil {
			return rpctypes.ErrGRPCKeyNotFound
		}
		return s.validateTxn(v.RequestTxn)
	default:
		// An empty op, as etcd reports it.
		return rpctypes.ErrGRPCKeyNotFound
	}
}

// interval is a key range with the conventions of treeIndex.ascend.
type interval struct{ key, end []byte }

func (iv interval) contains(k []byte) bool { return inRange(k, iv.key, iv.end) }

func anyContains(ivs []interval, k []byte) bool {
	for _, iv := range ivs {
		if iv.contains(k) {
			return true
		}
	}
	return false
}

// checkIntervals is etcd's rule against writing a key twice in one
// transaction: puts may not repeat a key nor fall in a deleted range, across
// nesting levels; the two branches of a nested transaction exclude each
// other, so they may write the same key.
func checkIntervals(reqs []*etcdserverpb.RequestOp) (map[string]struct{}, []interval, error) {
	var dels []interval
	for _, op := range reqs {
		if d := op.GetRequestDeleteRange(); d != nil {
			dels = append(dels, interval{d.Key, d.RangeEnd})
		}
	}
	puts := make(map[string]struct{})
	for _, op := range reqs {
		t := op.GetRequestTxn()
		if t == nil {
			continue
		}
		putsThen, delsThen, err := checkIntervals(t.Success)
		if err != nil {
			return nil, nil, err
		}
		putsElse, delsElse, err := checkIntervals(t.Failure)
		if err != nil {
			return nil, nil, err
		}
		// Walk the keys in a fixed order so the same request always
		// fails the same way.
		for _, k := range sortedKeys(putsThen) {
			if _, dup := puts[string(k)]; dup || anyContains(dels, k) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[string(k)] = struct{}{}
		}
		for _, k := range sortedKeys(putsElse) {
			if _, dup := puts[string(k)]; dup {
				if _, sameTxn := putsThen[string(k)]; !sameTxn {
					return nil, nil, rpctypes.ErrGRPCDuplicateKey
				}
			}
			if anyContains(dels, k) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[string(k)] = struct{}{}
		}
		dels = append(dels, delsThen...)
		dels = append(dels, delsElse...)
	}
	for _, op := range reqs {
		p := op.GetRequestPut()
		if p == nil {
			continue
		}
		if _, dup := puts[string(p.Key)]; dup || anyContains(dels, p.Key) {
			return nil, nil, rpctypes.ErrGRPCDuplicateKey
		}
		puts[string(p.Key)] = struct{}{}
	}
	return puts, dels, nil
}

// compareToPath evaluates the compares of rt and of the nested transactions
// on its chosen path, depth first, before any op runs.
func (w *writer) compareToPath(rt *etcdserverpb.TxnRequest) []bool {
	ok := w.compares(rt.Compare)
	path := []bool{ok}
	for _, op := range branch(rt, ok) {
		if t := op.GetRequestTxn(); t != nil {
			path = append(path, w.compareToPath(t)...)
		}
	}
	return path
}

func (w *writer) compares(cs []*etcdserverpb.Compare) bool {
	for _, c := range cs {
		if !w.compare(c) {
			return false
		}
	}
	return true
}

// compare holds when every key in the compare's range satisfies it; an
// empty range compares as a zero KeyValue, except on VALUE, which fails.
func (w *writer) compare(c *etcdserverpb.Compare) bool {
	var kvs []*mvccpb.KeyValue
	w.s.index.ascend(c.Key, c.RangeEnd, func(ki *keyIndex) bool {
		if kv := w.current(ki.key); kv != nil {
			kvs = append(kvs, kv)
		}
		return true
	})
	if len(kvs) == 0 {
		if c.Target == etcdserverpb.Compare_VALUE {
			return false
		}
		return compareKV(c, &mvccpb.KeyValue{})
	}
	for _, kv := range kvs {
		if !compareKV(c, kv) {
			return false
		}
	}
	return true
}

// checkPath verifies, against the state before the transaction, the
// preconditions of every op on the chosen path.
func (w *writer) checkPath(rt *etcdserverpb.TxnRequest, path []bool, i *int) error {
	ok := path[*i]
	*i++
	for _, op := range branch(rt, ok) {
		switch v := op.GetRequest().(type) {
		case *etcdserverpb.RequestOp_RequestRange:
			if rev := v.RequestRange.Revision; rev > 0 {
				if rev > w.beginRev {
					return rpctypes.ErrGRPCFutureRev
				}
				if rev < w.s.compactRev {
					return rpctypes.ErrGRPCCompacted
				}
			}
		case *etcdserverpb.RequestOp_RequestPut:
			if err := w.checkPut(v.RequestPut); err != nil {
				return err
			}
		case *etcdserverpb.RequestOp_RequestTxn:
			if err := w.checkPath(v.RequestTxn, path, i); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *writer) execTxn(rt *etcdserverpb.TxnRequest, path []bool, i *int) *etcdserverpb.TxnResponse {
	ok := path[*i]
	*i++
	ops := branch(rt, ok)
	resp := &etcdserverpb.TxnResponse{
		Header:    w.header(),
		Succeeded: ok,
		Responses: make([]*etcdserverpb.ResponseOp, 0, len(ops)),
	}
	for _, op := range ops {
		out := &etcdserverpb.ResponseOp{}
		switch v := op.GetRequest().(type) {
		case *etcdserverpb.RequestOp_RequestRange:
			rr, err := w.rangeView(v.RequestRange)
			if err != nil {
				// Preconditions were checked; only a storage failure,
				// already recorded by rangeView, gets here.
				rr = &etcdserverpb.RangeResponse{}
			}
			rr.Header = w.header()
			out.Response = &etcdserverpb.ResponseOp_ResponseRange{ResponseRange: rr}
		case *etcdserverpb.RequestOp_RequestPut:
			out.Response = &etcdserverpb.ResponseOp_ResponsePut{ResponsePut: w.put(v.RequestPut)}
		case *etcdserverpb.RequestOp_RequestDeleteRange:
			out.Response = &etcdserverpb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: w.deleteRange(v.RequestDeleteRange)}
		case *etcdserverpb.RequestOp_RequestTxn:
			out.Response = &etcdserverpb.ResponseOp_ResponseTxn{ResponseTxn: w.execTxn(v.RequestTxn, path, i)}
		}
		resp.Responses = append(resp.Responses, out)
	}
	return resp
}
