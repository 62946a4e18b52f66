package image

import (
	"encoding/json"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"

	"nexus.dev/nexus/internal/proc"
)

var (
	bucketImages     = []byte("images")
	bucketContainers = []byte("containers")
)

// imageRecord is what meta.db keeps for an image name.
type imageRecord struct {
	Digest   v1.Hash     `json:"digest"`
	Config   v1.Hash     `json:"config"`
	Platform v1.Platform `json:"platform"`
	Size     int64       `json:"size"`
	Stored   time.Time   `json:"stored"`
	// Source identifies where a generated image came from (the built-in
	// image records the digest of the binary it was made from).
	Source string `json:"source,omitempty"`
}

// containerRecord is a prepared container: it holds its layers against GC.
type containerRecord struct {
	Image   string    `json:"image"`
	Digest  v1.Hash   `json:"digest"`
	Config  v1.Hash   `json:"config"`
	Layers  []v1.Hash `json:"layers"`
	DiffIDs []v1.Hash `json:"diffIDs"`
	Overlay bool      `json:"overlay"`
	Created time.Time `json:"created"`
	// Owner is the process that prepared the container, which releases it
	// when done; Prune releases a container whose owner is gone and on
	// whose root file system no process runs. Records written before it
	// existed have the zero ID, which names no process.
	Owner proc.ID `json:"owner"`
}

// update and view open meta.db for one transaction. Keeping it closed in
// between lets other processes (the CLI next to a running agent) use it.
func (s *Store) update(fn func(tx *bolt.Tx) error) error { return s.tx(true, fn) }
func (s *Store) view(fn func(tx *bolt.Tx) error) error   { return s.tx(false, fn) }

func (s *Store) tx(write bool, fn func(tx *bolt.Tx) error) error {
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	db, err := bolt.Open(s.path(fileMeta), 0o600, &bolt.Options{Timeout: time.Minute})
	if err != nil {
		return fmt.Errorf("open image metadata %s: %w", s.path(fileMeta), err)
	}
	if write {
		err = db.Update(fn)
	} else {
		err = db.View(fn)
	}
	if cerr := db.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close image metadata: %w", cerr)
	}
	return err
}

func getJSON(b *bolt.Bucket, key string, v any) (bool, error) {
	data := b.Get([]byte(key))
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("image metadata for %s is damaged: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), data)
}

// images returns every name and its record.
func (s *Store) images() (recs map[string]imageRecord, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		recs, err = imagesIn(tx)
		return err
	})
	return recs, err
}

// containers returns every prepared container's record.
func (s *Store) containers() (recs map[string]containerRecord, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		recs, err = containersIn(tx)
		return err
	})
	return recs, err
}

// imagesIn and containersIn read every record within tx, for a caller
// that must decide and write in the same transaction (Remove).
func imagesIn(tx *bolt.Tx) (map[string]imageRecord, error) {
	return decodeAll[imageRecord](tx.Bucket(bucketImages), "image metadata for")
}

func containersIn(tx *bolt.Tx) (map[string]containerRecord, error) {
	return decodeAll[containerRecord](tx.Bucket(bucketContainers), "metadata of prepared container")
}

// decodeAll decodes every record in b; what, followed by the key, names a
// record that is damaged.
func decodeAll[T any](b *bolt.Bucket, what string) (map[string]T, error) {
	out := map[string]T{}
	err := b.ForEach(func(k, v []byte) error {
		var r T
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("%s %s is damaged: %w", what, k, err)
		}
		out[string(k)] = r
		return nil
	})
	return out, err
}
