package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/storage"
	"nexus.dev/nexus/security/secretbox"
)

// SecretKeys seals Secrets at rest with the keys of a key file
// (<data-dir>/secrets.key), bound to each secret's store key. It follows
// the file: after `nexus secrets rotate-key` the server seals with the new
// primary key within Refresh (and at once when it meets a value sealed
// with a key it has not loaded yet).
type SecretKeys struct {
	path string
	log  *slog.Logger
	ring atomic.Pointer[secretbox.Keyring]

	mu    sync.Mutex
	stamp time.Time
}

// SecretKeysRefresh is how often the key file is checked for a rotation.
const SecretKeysRefresh = 10 * time.Second

// LoadSecretKeys reads the key file at path, creating it (with one new key)
// when create is set and it does not exist.
func LoadSecretKeys(path string, create bool, log *slog.Logger) (*SecretKeys, error) {
	if log == nil {
		log = slog.Default()
	}
	k := &SecretKeys{path: path, log: log}
	ring, err := secretbox.Load(path)
	if errors.Is(err, os.ErrNotExist) && create {
		ring, err = secretbox.Generate(path)
		if err == nil {
			log.Info("made the key that encrypts Secrets at rest: every server of the cluster needs this file", "file", path)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	k.ring.Store(ring)
	k.stamp = k.modTime()
	return k, nil
}

// Transformers is the storage configuration that seals secrets.
func (k *SecretKeys) Transformers() map[string]storage.Transformer {
	return map[string]storage.Transformer{"secrets": k}
}

// Seal encrypts a secret's JSON with the primary key.
func (k *SecretKeys) Seal(key string, plain []byte) ([]byte, error) {
	return k.ring.Load().Seal(plain, []byte(key))
}

// Open decrypts a stored secret, reloading the key file once if the value
// names a key this process has not loaded (another process rotated).
func (k *SecretKeys) Open(key string, stored []byte) ([]byte, error) {
	plain, err := k.ring.Load().Open(stored, []byte(key))
	if errors.Is(err, secretbox.ErrUnknownKey) && k.reload(true) {
		plain, err = k.ring.Load().Open(stored, []byte(key))
	}
	return plain, err
}

// NeedsReseal reports whether a stored value is sealed with an old key.
func (k *SecretKeys) NeedsReseal(stored []byte) bool { return k.ring.Load().NeedsReseal(stored) }

// Run reloads the key file when it changes, until ctx ends.
func (k *SecretKeys) Run(ctx context.Context) {
	t := time.NewTicker(SecretKeysRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.reload(false)
		}
	}
}

func (k *SecretKeys) modTime() time.Time {
	st, err := os.Stat(k.path)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// reload loads the key file if it changed (or always, with force) and
// reports whether it loaded a new keyring.
func (k *SecretKeys) reload(force bool) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	m := k.modTime()
	if !force && m.Equal(k.stamp) {
		return false
	}
	ring, err := secretbox.Load(k.path)
	if err != nil {
		k.log.Error("reload the secrets key file: keeping the keys loaded", "file", k.path, "err", err)
		return false
	}
	k.ring.Store(ring)
	k.stamp = m
	k.log.Info("loaded the secrets key file", "file", k.path, "primary", ring.Primary(), "keys", len(ring.KeyIDs()))
	return true
}

// ResealResult says what ResealSecrets did.
type ResealResult struct {
	Resealed, Current int
}

// ResealSecrets seals every stored Secret that is not sealed with the
// primary key again with it (after a rotation), each with a compare-and-
// swap on its revision so a concurrent write is never overwritten.
func ResealSecrets(ctx context.Context, cli *clientv3.Client, k *SecretKeys) (ResealResult, error) {
	var res ResealResult
	prefix := storage.DefaultPrefix + "secrets/"
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return res, fmt.Errorf("list secrets: %w", err)
	}
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		cur, rev := kv.Value, kv.ModRevision
		for attempt := 0; ; attempt++ {
			if !k.NeedsReseal(cur) {
				res.Current++
				break
			}
			plain, err := k.Open(key, cur)
			if err != nil {
				return res, fmt.Errorf("open %s: %w", key, err)
			}
			sealed, err := k.Seal(key, plain)
			if err != nil {
				return res, err
			}
			txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
				Then(clientv3.OpPut(key, string(sealed))).Else(clientv3.OpGet(key)).Commit()
			if err != nil {
				return res, fmt.Errorf("reseal %s: %w", key, err)
			}
			if txn.Succeeded {
				res.Resealed++
				break
			}
			// Written meanwhile (by a server still sealing with the old key,
			// say): take the new value and look again.
			got := txn.Responses[0].GetResponseRange().Kvs
			if len(got) == 0 || attempt > 16 {
				break // deleted meanwhile, or hopelessly contended
			}
			cur, rev = got[0].Value, got[0].ModRevision
		}
	}
	return res, nil
}

// Path is the key file's path.
func (k *SecretKeys) Path() string { return k.path }
