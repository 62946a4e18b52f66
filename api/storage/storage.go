package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/types"
)

// DefaultPrefix is where the API keeps its objects in the keyspace.
const DefaultPrefix = "/nexus/v1/"

// Transformer turns an object's JSON into what is stored at a key and back,
// e.g. encrypting secrets. The key is passed so a sealed value is bound to
// it: copied under another key it does not open.
type Transformer interface {
	Seal(key string, plain []byte) ([]byte, error)
	Open(key string, stored []byte) ([]byte, error)
}

// Config is what a Store needs.
type Config struct {
	Client *clientv3.Client
	// Prefix of every key (default DefaultPrefix).
	Prefix string
	// Transformers by resource plural ("secrets").
	Transformers map[string]Transformer
	// Now is the clock for creation timestamps (default time.Now).
	Now func() time.Time
	// Retries bounds how often an unconditional update or delete re-reads
	// after losing a race (default 16).
	Retries int
	// Claims lists the unique values objects hold, by resource plural
	// (claims.go): taken and freed in the same transactions as the objects.
	Claims map[string]ClaimsFunc
}

// Store reads and writes API objects.
type Store struct {
	cli     *clientv3.Client
	prefix  string
	trans   map[string]Transformer
	now     func() time.Time
	retries int
	claims  map[string]ClaimsFunc
}

// New returns a store over cfg.Client.
func New(cfg Config) *Store {
	s := &Store{cli: cfg.Client, prefix: cfg.Prefix, trans: cfg.Transformers, now: cfg.Now, retries: cfg.Retries, claims: cfg.Claims}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if !strings.HasSuffix(s.prefix, "/") {
		s.prefix += "/"
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.retries <= 0 {
		s.retries = 16
	}
	return s
}

// objectRef names one object.
type objectRef struct {
	r        *types.Resource
	ns, name string
}

func refOf(o types.Object) objectRef {
	m := o.GetObjectMeta()
	return objectRef{types.ResourceOf(o), m.Namespace, m.Name}
}

// Key returns the store key of an object.
func (s *Store) Key(r *types.Resource, ns, name string) string {
	if r.Namespaced {
		return s.prefix + r.Plural + "/" + ns + "/" + name
	}
	return s.prefix + r.Plural + "/" + name
}

// listPrefix is the key prefix of every object of r in ns (all namespaces
// when ns is empty).
func (s *Store) listPrefix(r *types.Resource, ns string) string {
	if r.Namespaced && ns != "" {
		return s.prefix + r.Plural + "/" + ns + "/"
	}
	return s.prefix + r.Plural + "/"
}

func (s *Store) key(ref objectRef) string { return s.Key(ref.r, ref.ns, ref.name) }

func (s *Store) check(ref objectRef) error {
	switch {
	case ref.r == nil:
		return &Error{Reason: Invalid, Message: "not an API object"}
	case ref.name == "":
		return errorf(Invalid, ref, "the object has no name")
	case ref.r.Namespaced && ref.ns == "":
		return errorf(Invalid, ref, "the object has no namespace")
	case !ref.r.Namespaced && ref.ns != "":
		return errorf(Invalid, ref, "%s are not namespaced", ref.r.Plural)
	case strings.Contains(ref.name, "/") || strings.Contains(ref.ns, "/"):
		return errorf(Invalid, ref, "names cannot contain '/'")
	}
	return nil
}

func (s *Store) encode(ref objectRef, o types.Object) ([]byte, error) {
	data, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode %s/%s: %w", ref.r.Plural, ref.name, err)
	}
	if t := s.trans[ref.r.Plural]; t != nil {
		return t.Seal(s.key(ref), data)
	}
	return data, nil
}

// decode reads a stored value. Stored data is our own, so it is read
// leniently: a field written by a newer version is ignored, not an error.
func (s *Store) decode(r *types.Resource, kv *mvccpb.KeyValue) (types.Object, error) {
	data := kv.Value
	if t := s.trans[r.Plural]; t != nil {
		var err error
		if data, err = t.Open(string(kv.Key), data); err != nil {
			return nil, fmt.Errorf("open %s: %w", kv.Key, err)
		}
	}
	o := r.New()
	if err := json.Unmarshal(data, o); err != nil {
		return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	*o.GetTypeMeta() = types.TypeMeta{APIVersion: types.APIVersion, Kind: r.Kind}
	o.GetObjectMeta().ResourceVersion = strconv.FormatInt(kv.ModRevision, 10)
	return o, nil
}

// storeError turns a client error into a storage error naming the object.
func storeError(ref objectRef, err error) error {
	if err == nil {
		return nil
	}
	var se *Error
	if errors.As(err, &se) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	e := errorf(Unavailable, ref, "the store did not answer: %v", err)
	e.Err = err
	return e
}

func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant 10
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Create stores a new object. Its resourceVersion must be empty; uid,
// creationTimestamp and generation are set here. It fails with
// AlreadyExists if the name is taken, and with Invalid (Error.Claim set)
// if another object holds one of its claims; then nothing is written.
func (s *Store) Create(ctx context.Context, o types.Object) (types.Object, error) {
	ref := refOf(o)
	if err := s.check(ref); err != nil {
		return nil, err
	}
	m := o.GetObjectMeta()
	if m.ResourceVersion != "" {
		return nil, errorf(Invalid, ref, "metadata.resourceVersion must not be set when creating an object")
	}
	m.UID = newUID()
	m.CreationTimestamp = s.now().UTC().Truncate(time.Second)
	m.Generation = 1
	*o.GetTypeMeta() = types.TypeMeta{APIVersion: types.APIVersion, Kind: ref.r.Kind}
	data, err := s.encode(ref, o)
	if err != nil {
		return nil, err
	}
	key := s.key(ref)
	claims := s.claimsOf(ref.r, o)
	owner := ownerOf(ref, o)
	conds, puts := s.takeOps(claims, owner)
	resp, err := s.cli.Txn(ctx).
		If(append([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, conds...)...).
		Then(append([]clientv3.Op{clientv3.OpPut(key, string(data))}, puts...)...).
		Commit()
	if err != nil {
		return nil, storeError(ref, err)
	}
	if !resp.Succeeded {
		if exists, err := s.cli.Get(ctx, key, clientv3.WithCountOnly()); err != nil {
			return nil, storeError(ref, err)
		} else if exists.Count == 0 && len(claims) > 0 {
			if err := s.takenClaim(ctx, ref, claims, owner); err != nil {
				return nil, err
			}
			return nil, errorf(Conflict, ref, "a value it claims was taken and freed while it was created: try again")
		}
		return nil, errorf(AlreadyExists, ref, "already exists")
	}
	m.ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
	return o, nil
}

// Get reads one object (a linearizable read).
func (s *Store) Get(ctx context.Context, r *types.Resource, ns, name string) (types.Object, error) {
	ref := objectRef{r, ns, name}
	if err := s.check(ref); err != nil {
		return nil, err
	}
	resp, err := s.cli.Get(ctx, s.key(ref))
	if err != nil {
		return nil, storeError(ref, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, errorf(NotFound, ref, "not found")
	}
	return s.decode(r, resp.Kvs[0])
}

// ListOptions narrow and page a list.
type ListOptions struct {
	Labels types.Selector
	Fields types.Selector
	// Limit is the most objects to return (0: all); when more remain the
	// list's Continue token fetches the next page at the same revision.
	Limit    int64
	Continue string
}

// List is one page of objects, all read at Revision.
type List struct {
	Items    []types.Object
	Revision int64
	Continue string
}

type continueToken struct {
	Rev   int64  `json:"rev"`
	Start string `json:"start"` // the key to continue from, relative to the list prefix
}

func encodeContinue(t continueToken) string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeContinue(s string) (continueToken, error) {
	var t continueToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.Rev <= 0 || t.Start == "" {
		return continueToken{}, errors.New("the continue token is malformed: pass back the one a list returned")
	}
	return t, nil
}

// listBatch is how many keys one range read fetches while filling a page.
const listBatch = 500

// List returns objects of r in ns (every namespace when ns is empty) that
// match the selectors, in key order (namespace, then name).
func (s *Store) List(ctx context.Context, r *types.Resource, ns string, opts ListOptions) (*List, error) {
	ref := objectRef{r: r, ns: ns}
	prefix := s.listPrefix(r, ns)
	end := clientv3.GetPrefixRangeEnd(prefix)
	start, rev := prefix, int64(0)
	if opts.Continue != "" {
		t, err := decodeContinue(opts.Continue)
		if err != nil {
			return nil, errorf(Invalid, ref, "%v", err)
		}
		start, rev = prefix+t.Start, t.Rev
		if !strings.HasPrefix(start, prefix) || strings.Contains(t.Start, "\x00\x00") {
			return nil, errorf(Invalid, ref, "the continue token belongs to another list")
		}
	}
	out := &List{}
	for {
		batch := int64(listBatch)
		if opts.Limit > 0 && opts.Labels.Empty() && opts.Fields.Empty() {
			batch = opts.Limit - int64(len(out.Items)) + 1 // one more tells whether the list goes on
		}
		ops := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(batch)}
		if rev > 0 {
			ops = append(ops, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, start, ops...)
		if err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				e := errorf(Gone, ref, "the list's revision %d was compacted while paging: list again from the start", rev)
				e.CurrentRevision = s.currentRevision(ctx)
				return nil, e
			}
			return nil, storeError(ref, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for i, kv := range resp.Kvs {
			if opts.Limit > 0 && int64(len(out.Items)) == opts.Limit {
				out.Continue = encodeContinue(continueToken{Rev: rev, Start: strings.TrimPrefix(string(resp.Kvs[i].Key), prefix)})
				out.Revision = rev
				return out, nil
			}
			o, err := s.decode(r, kv)
			if err != nil {
				return nil, err
			}
			if matches(o, opts) {
				out.Items = append(out.Items, o)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	out.Revision = rev
	return out, nil
}

func matches(o types.Object, opts ListOptions) bool {
	if !opts.Labels.Empty() && !opts.Labels.Matches(o.GetObjectMeta().Labels) {
		return false
	}
	if !opts.Fields.Empty() && !opts.Fields.Matches(types.SelectableFields(o)) {
		return false
	}
	return true
}

func (s *Store) currentRevision(ctx context.Context) int64 {
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithCountOnly())
	if err != nil {
		return 0
	}
	return resp.Header.Revision
}

// Mutate turns the current object into the one to store. It may return an
// error to stop the update (returned as it is).
type Mutate func(cur types.Object) (types.Object, error)

// UpdateOptions say which part of an object an update replaces and on
// what condition.
type UpdateOptions struct {
	// Status updates only the status subresource: everything else is kept
	// from the stored object. Otherwise the stored status is kept.
	Status bool
	// ResourceVersion, when set, must be the stored object's (else
	// Conflict); when empty the update is applied to whatever is current,
	// retrying if it loses a race.
	ResourceVersion string
}

// Update replaces an object with o (see UpdateOptions).
func (s *Store) Update(ctx context.Context, o types.Object, opts UpdateOptions) (types.Object, error) {
	ref := refOf(o)
	if opts.ResourceVersion == "" {
		opts.ResourceVersion = o.GetObjectMeta().ResourceVersion
	}
	return s.GuaranteedUpdate(ctx, ref.r, ref.ns, ref.name, opts, func(types.Object) (types.Object, error) { return o, nil })
}

// GuaranteedUpdate reads the object, asks mutate for its replacement and
// writes it if nothing changed it meanwhile, repeating on a lost race
// unless opts pins a resourceVersion. Identity (uid, creation time) is kept,
// the generation rises when the spec changed, and an update that changes
// nothing writes nothing.
func (s *Store) GuaranteedUpdate(ctx context.Context, r *types.Resource, ns, name string, opts UpdateOptions, mutate Mutate) (types.Object, error) {
	ref := objectRef{r, ns, name}
	if err := s.check(ref); err != nil {
		return nil, err
	}
	key := s.key(ref)
	for attempt := 0; ; attempt++ {
		cur, curRev, err := s.read(ctx, ref)
		if err != nil {
			return nil, err
		}
		if opts.ResourceVersion != "" && opts.ResourceVersion != cur.GetObjectMeta().ResourceVersion {
			return nil, s.conflict(ref, opts.ResourceVersion, cur)
		}
		next, err := mutate(cur)
		if err != nil {
			return nil, err
		}
		merged, changed, err := merge(r, cur, next, opts.Status)
		if err != nil {
			return nil, errorf(Invalid, ref, "%v", err)
		}
		if !changed {
			return cur, nil
		}
		data, err := s.encode(ref, merged)
		if err != nil {
			return nil, err
		}
		conds := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", curRev)}
		ops := []clientv3.Op{clientv3.OpPut(key, string(data))}
		owner := ownerOf(ref, cur)
		take, free := claimDiff(s.claimsOf(r, cur), s.claimsOf(r, merged))
		tc, to := s.takeOps(take, owner)
		fc, fo, err := s.freeOps(ctx, ref, free, owner)
		if err != nil {
			return nil, err
		}
		resp, err := s.cli.Txn(ctx).If(append(append(conds, tc...), fc...)...).Then(append(append(ops, to...), fo...)...).Commit()
		if err != nil {
			return nil, storeError(ref, err)
		}
		if resp.Succeeded {
			merged.GetObjectMeta().ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
			return merged, nil
		}
		if err := s.takenClaim(ctx, ref, take, owner); err != nil {
			return nil, err
		}
		if opts.ResourceVersion != "" {
			return nil, errorf(Conflict, ref, "the object was modified (resourceVersion %s is no longer current): read it again and reapply your change", opts.ResourceVersion)
		}
		if attempt >= s.retries {
			return nil, errorf(Conflict, ref, "lost %d races to concurrent writers: try again", attempt+1)
		}
	}
}

func (s *Store) conflict(ref objectRef, want string, cur types.Object) error {
	return errorf(Conflict, ref, "the object was modified (resourceVersion %s, current %s): read it again and reapply your change", want, cur.GetObjectMeta().ResourceVersion)
}

func (s *Store) read(ctx context.Context, ref objectRef) (types.Object, int64, error) {
	resp, err := s.cli.Get(ctx, s.key(ref))
	if err != nil {
		return nil, 0, storeError(ref, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, errorf(NotFound, ref, "not found")
	}
	o, err := s.decode(ref.r, resp.Kvs[0])
	return o, resp.Kvs[0].ModRevision, err
}

// merge builds the object to store from the current one and the update:
// identity (uid, creation time, generation) from cur; for a status update
// everything but the status from cur, otherwise the status from cur. The
// generation rises when anything outside metadata and status changed. It
// reports whether the result differs from cur.
func merge(r *types.Resource, cur, next types.Object, status bool) (types.Object, bool, error) {
	cm, nm := cur.GetObjectMeta(), next.GetObjectMeta()
	if nm.Name != cm.Name || nm.Namespace != cm.Namespace {
		return nil, false, fmt.Errorf("metadata.name and metadata.namespace cannot change (%s/%s)", cm.Namespace, cm.Name)
	}
	if nm.UID != "" && nm.UID != cm.UID {
		return nil, false, fmt.Errorf("metadata.uid %s is not the object's (%s): it was deleted and created again", nm.UID, cm.UID)
	}
	curF, err := toFields(cur)
	if err != nil {
		return nil, false, err
	}
	nextF, err := toFields(next)
	if err != nil {
		return nil, false, err
	}
	if r.HasStatus {
		if status {
			st := nextF["status"]
			nextF = cloneFields(curF)
			setOrDelete(nextF, "status", st)
		} else {
			setOrDelete(nextF, "status", curF["status"])
		}
	}
	raw, err := json.Marshal(nextF)
	if err != nil {
		return nil, false, err
	}
	out := r.New()
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, false, err
	}
	*out.GetTypeMeta() = types.TypeMeta{APIVersion: types.APIVersion, Kind: r.Kind}
	om := out.GetObjectMeta()
	om.UID, om.CreationTimestamp, om.Generation, om.ResourceVersion = cm.UID, cm.CreationTimestamp, cm.Generation, cm.ResourceVersion
	outF, err := toFields(out)
	if err != nil {
		return nil, false, err
	}
	if !sameExcept(curF, outF, "metadata", "status") {
		om.Generation++
	}
	a, _ := json.Marshal(cur)
	b, _ := json.Marshal(out)
	return out, !bytes.Equal(a, b), nil
}

func toFields(o types.Object) (map[string]json.RawMessage, error) {
	raw, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	m := map[string]json.RawMessage{}
	return m, json.Unmarshal(raw, &m)
}

func cloneFields(m map[string]json.RawMessage) map[string]json.RawMessage {
	c := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func setOrDelete(m map[string]json.RawMessage, k string, v json.RawMessage) {
	if v == nil {
		delete(m, k)
		return
	}
	m[k] = v
}

// sameExcept compares two objects' fields, ignoring some.
func sameExcept(a, b map[string]json.RawMessage, ignore ...string) bool {
	skip := func(k string) bool {
		for _, i := range ignore {
			if i == k {
				return true
			}
		}
		return false
	}
	for k, v := range a {
		if !skip(k) && !jsonEqual(v, b[k]) {
			return false
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok && !skip(k) && v != nil {
			return false
		}
	}
	return true
}

// jsonEqual compares two JSON values by meaning (object key order aside).
func jsonEqual(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ca, _ := json.Marshal(x)
	cb, _ := json.Marshal(y)
	return bytes.Equal(ca, cb)
}

// DeleteOptions carry the condition of a delete.
type DeleteOptions struct {
	// ResourceVersion, when set, must be the stored object's (else Conflict).
	ResourceVersion string
}

// Delete removes an object and returns it as it was, freeing its claims
// in the same transaction.
func (s *Store) Delete(ctx context.Context, r *types.Resource, ns, name string, opts DeleteOptions) (types.Object, error) {
	ref := objectRef{r, ns, name}
	if err := s.check(ref); err != nil {
		return nil, err
	}
	key := s.key(ref)
	for attempt := 0; ; attempt++ {
		cur, curRev, err := s.read(ctx, ref)
		if err != nil {
			return nil, err
		}
		if opts.ResourceVersion != "" && opts.ResourceVersion != cur.GetObjectMeta().ResourceVersion {
			return nil, s.conflict(ref, opts.ResourceVersion, cur)
		}
		fc, fo, err := s.freeOps(ctx, ref, s.claimsOf(r, cur), ownerOf(ref, cur))
		if err != nil {
			return nil, err
		}
		resp, err := s.cli.Txn(ctx).
			If(append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", curRev)}, fc...)...).
			Then(append([]clientv3.Op{clientv3.OpDelete(key)}, fo...)...).
			Commit()
		if err != nil {
			return nil, storeError(ref, err)
		}
		if resp.Succeeded {
			return cur, nil
		}
		if opts.ResourceVersion != "" {
			return nil, errorf(Conflict, ref, "the object was modified (resourceVersion %s is no longer current): read it again", opts.ResourceVersion)
		}
		if attempt >= s.retries {
			return nil, errorf(Conflict, ref, "lost %d races to concurrent writers: try again", attempt+1)
		}
	}
}
