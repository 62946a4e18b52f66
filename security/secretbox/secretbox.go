// Package secretbox encrypts the values of Secrets before they reach the
// store, so the store (its files, snapshots, backups and an external etcd)
// never holds them in plaintext.
//
// Values are sealed with AES-256-GCM under a key from the key file
// (<data-dir>/secrets.key, mode 0600), with a random 96-bit nonce. A sealed
// value is text and names its key:
//
//	nxs1:<key id>:<base64(nonce | ciphertext | tag)>
//
// The additional data of the seal is the value's prefix ("nxs1:<key id>:")
// followed by the caller's additional data, which should be the store key
// the value is written under ("/nexus/v1/secrets/<ns>/<name>"): a value
// copied to another key, or to another Secret, does not open.
//
// The key file holds one or more keys as PEM blocks:
//
//	-----BEGIN NEXUS SECRETS KEY-----
//	Key-Id: 1f0c9e2a
//	Created: 2026-01-02T15:04:05Z
//
//	<base64 of 32 random bytes>
//	-----END NEXUS SECRETS KEY-----
//
// The last key in the file is the primary: Seal uses it, Open uses
// whichever key a value names. Rotate appends a new primary and keeps the
// old keys, so values sealed before still open; NeedsReseal finds those
// values so they can be sealed again with the primary, after which Retire
// drops the old key. Key ids are random, so a key file made again from
// scratch cannot be mistaken for the lost one: its values fail with an
// error naming the missing key.
//
// With random nonces one key must seal fewer than 2^32 values (NIST SP
// 800-38D); a cluster's Secrets are orders of magnitude fewer, and
// rotation starts a new key.
//
// Every server must hold the same key file, since any of them may read a
// Secret another one wrote.
package secretbox

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/security/pki"
)

// FileName is the key file's name in the data directory.
const FileName = "secrets.key"

const (
	prefix    = "nxs1:"
	blockType = "NEXUS SECRETS KEY"
	keyLen    = 32
	nonceLen  = 12
	maxIDLen  = 64
	// maxFileSize bounds what Load reads: a key block is about 150 bytes,
	// so this is thousands of rotations.
	maxFileSize = 1 << 20
)

// Errors of Open and of the key file; test with errors.Is.
var (
	ErrNotSealed  = errors.New("not a sealed value (nxs1:<key id>:<data>)")
	ErrUnknownKey = errors.New("sealed with a key the key file does not hold")
	ErrDecrypt    = errors.New("does not decrypt: damaged, or sealed for another store key")
	ErrKeyFile    = errors.New("bad secrets key file")
)

// Keyring is the set of keys of one key file. It is immutable and safe for
// concurrent use; Rotate and Retire return a new one.
type Keyring struct {
	ids  []string // file order: the last is the primary
	keys map[string]cipher.AEAD
}

// Primary returns the id of the key Seal uses.
func (k *Keyring) Primary() string { return k.ids[len(k.ids)-1] }

// KeyIDs returns the ids of all keys, oldest first (the last is the
// primary).
func (k *Keyring) KeyIDs() []string { return slices.Clone(k.ids) }

// Seal encrypts plaintext with the primary key, bound to additionalData.
func (k *Keyring) Seal(plaintext, additionalData []byte) ([]byte, error) {
	id := k.Primary()
	aead := k.keys[id]
	head := prefix + id + ":"
	nonce := make([]byte, nonceLen, nonceLen+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	raw := aead.Seal(nonce, nonce, plaintext, sealAD(head, additionalData))
	out := make([]byte, len(head)+base64.StdEncoding.EncodedLen(len(raw)))
	copy(out, head)
	base64.StdEncoding.Encode(out[len(head):], raw)
	return out, nil
}

// Open decrypts a value Seal made with the same additionalData.
func (k *Keyring) Open(value, additionalData []byte) ([]byte, error) {
	id, data, err := parse(value)
	if err != nil {
		return nil, err
	}
	aead, ok := k.keys[id]
	if !ok {
		return nil, fmt.Errorf("%w: sealed with key %s which %s does not hold (it holds %v): restore the key file that has it", ErrUnknownKey, id, FileName, k.ids)
	}
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(data)))
	n, err := base64.StdEncoding.Strict().Decode(raw, data)
	if err != nil || n < nonceLen+aead.Overhead() {
		return nil, fmt.Errorf("key %s: %w", id, ErrDecrypt)
	}
	raw = raw[:n]
	plain, err := aead.Open(nil, raw[:nonceLen], raw[nonceLen:], sealAD(prefix+id+":", additionalData))
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", id, ErrDecrypt)
	}
	return plain, nil
}

// NeedsReseal reports whether value should be sealed again with the
// primary key: it names another key, or it is not a sealed value at all
// (Open then says why).
func (k *Keyring) NeedsReseal(value []byte) bool {
	id, _, err := parse(value)
	return err != nil || id != k.Primary()
}

func parse(value []byte) (id string, data []byte, err error) {
	rest, ok := bytes.CutPrefix(value, []byte(prefix))
	if !ok {
		return "", nil, ErrNotSealed
	}
	idb, data, ok := bytes.Cut(rest, []byte(":"))
	if !ok || !validID(string(idb)) {
		return "", nil, ErrNotSealed
	}
	return string(idb), data, nil
}

func sealAD(head string, ad []byte) []byte {
	return append([]byte(head), ad...)
}

func validID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Generate creates a key file at path with one new key. It refuses to
// replace an existing file: its keys may be the only way to open values
// already stored.
func Generate(path string) (*Keyring, error) {
	var k *Keyring
	err := withLock(path, func() error {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("create secrets key %s: it exists already (its keys may be needed to open stored secrets): load it, or rotate to add a key", path)
		}
		block, err := newBlock(nil)
		if err != nil {
			return err
		}
		if err := createExclusive(path, pem.EncodeToMemory(block)); err != nil {
			return fmt.Errorf("create secrets key %s: %w", path, err)
		}
		k, err = Load(path)
		return err
	})
	return k, err
}

// Load reads the key file at path, refusing one that group or others may
// read.
func Load(path string) (*Keyring, error) {
	data, err := pki.ReadPrivateFile(path, maxFileSize)
	if err != nil {
		return nil, err
	}
	blocks, err := parseFile(data)
	if err != nil {
		return nil, fmt.Errorf("read secrets key %s: %w", path, err)
	}
	k := &Keyring{keys: make(map[string]cipher.AEAD, len(blocks))}
	for _, b := range blocks {
		block, err := aes.NewCipher(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("read secrets key %s: %w", path, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("read secrets key %s: %w", path, err)
		}
		id := b.Headers["Key-Id"]
		k.ids = append(k.ids, id)
		k.keys[id] = aead
	}
	return k, nil
}

// Rotate adds a new key to the key file at path and makes it the primary;
// the old keys stay for opening what they sealed. Processes that hold a
// Keyring keep sealing with the old primary until they Load again.
func Rotate(path string) (*Keyring, error) {
	return rewrite(path, func(blocks []*pem.Block) ([]*pem.Block, error) {
		block, err := newBlock(blocks)
		if err != nil {
			return nil, err
		}
		return append(blocks, block), nil
	})
}

// Retire removes the key id from the key file at path, once no stored
// value is sealed with it (NeedsReseal is false for every value). The
// primary key cannot be retired.
func Retire(path, id string) (*Keyring, error) {
	return rewrite(path, func(blocks []*pem.Block) ([]*pem.Block, error) {
		i := slices.IndexFunc(blocks, func(b *pem.Block) bool { return b.Headers["Key-Id"] == id })
		switch {
		case i < 0:
			return nil, fmt.Errorf("retire key %s: %s holds no such key", id, path)
		case i == len(blocks)-1:
			return nil, fmt.Errorf("retire key %s: it is the primary key: rotate first", id)
		}
		return slices.Delete(blocks, i, i+1), nil
	})
}

func rewrite(path string, change func([]*pem.Block) ([]*pem.Block, error)) (*Keyring, error) {
	var k *Keyring
	err := withLock(path, func() error {
		data, err := pki.ReadPrivateFile(path, maxFileSize)
		if err != nil {
			return err
		}
		blocks, err := parseFile(data)
		if err != nil {
			return fmt.Errorf("read secrets key %s: %w", path, err)
		}
		if blocks, err = change(blocks); err != nil {
			return err
		}
		var out []byte
		for _, b := range blocks {
			out = append(out, pem.EncodeToMemory(b)...)
		}
		if err := pki.WriteFileAtomic(path, out, 0o600); err != nil {
			return err
		}
		k, err = Load(path)
		return err
	})
	return k, err
}

// newBlock makes a key block with an id none of existing has.
func newBlock(existing []*pem.Block) (*pem.Block, error) {
	key := make([]byte, keyLen)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("new secrets key: %w", err)
	}
	for {
		idb := make([]byte, 4)
		if _, err := rand.Read(idb); err != nil {
			return nil, fmt.Errorf("new secrets key: %w", err)
		}
		id := hex.EncodeToString(idb)
		if !slices.ContainsFunc(existing, func(b *pem.Block) bool { return b.Headers["Key-Id"] == id }) {
			return &pem.Block{Type: blockType, Headers: map[string]string{
				"Key-Id":  id,
				"Created": time.Now().UTC().Format(time.RFC3339),
			}, Bytes: key}, nil
		}
	}
}

// parseFile decodes and checks every block of a key file.
func parseFile(data []byte) ([]*pem.Block, error) {
	var blocks []*pem.Block
	seen := map[string]bool{}
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		n := len(blocks) + 1
		id := b.Headers["Key-Id"]
		switch {
		case b.Type != blockType:
			return nil, fmt.Errorf("%w: block %d is a %q, want %q", ErrKeyFile, n, b.Type, blockType)
		case !validID(id):
			return nil, fmt.Errorf("%w: block %d: Key-Id %q: use 1 to %d letters, digits, '-' or '_'", ErrKeyFile, n, id, maxIDLen)
		case seen[id]:
			return nil, fmt.Errorf("%w: key %s appears twice", ErrKeyFile, id)
		case len(b.Bytes) != keyLen:
			return nil, fmt.Errorf("%w: key %s is %d bytes, want %d", ErrKeyFile, id, len(b.Bytes), keyLen)
		}
		seen[id] = true
		blocks = append(blocks, b)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: text after key %d that is not a key block", ErrKeyFile, len(blocks))
	}
	if len(blocks) == 0 {
		return nil, fmt.Errorf("%w: no key in it", ErrKeyFile)
	}
	return blocks, nil
}

// createExclusive writes data to path (0600) durably and atomically, and
// fails if path exists: the file is written under a temporary name and
// linked into place, which, unlike a rename, does not replace.
func createExclusive(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if err := fsutil.WriteFileSync(tmp.Name(), data, 0o600); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return err
	}
	return fsutil.SyncDir(dir)
}

// withLock runs fn holding an flock on <path>.lock, so that two rotations
// at once cannot lose a key.
func withLock(path string, fn func() error) error {
	lf, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lock secrets key: %w", err)
	}
	defer lf.Close() // closing releases the lock
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock secrets key %s: %w", path, err)
	}
	return fn()
}
