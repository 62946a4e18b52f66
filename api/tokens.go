package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"nexus.dev/nexus/api/storage"
	"nexus.dev/nexus/api/types"
	"nexus.dev/nexus/security/audit"
	"nexus.dev/nexus/security/authz"
)

// Service account tokens: "nxsa1.<id>.<secret>". The store keeps only the
// SHA-256 of the secret, with the account, its uid and an expiry; deleting
// the token (or the account) revokes it.
const (
	tokenPrefix           = "nxsa1."
	defaultTokenLifetime  = time.Hour
	maxTokenLifetime      = 365 * 24 * time.Hour
	minTokenLifetime      = 10 * time.Minute
	tokenSecretBytes      = 32
	tokenIDBytes          = 8
	serviceAccountsPlural = "serviceaccounts"
)

type tokenRecord struct {
	Namespace         string    `json:"namespace"`
	ServiceAccount    string    `json:"serviceAccount"`
	ServiceAccountUID string    `json:"serviceAccountUID"`
	Hash              string    `json:"hash"`
	Created           time.Time `json:"created"`
	Expires           time.Time `json:"expires"`
}

type tokenStore struct {
	cli    *clientv3.Client
	prefix string
	now    func() time.Time
}

// TokenRequest asks for a service account token.
type TokenRequest struct {
	// ExpirationSeconds is the token's lifetime (default 3600; 600 to
	// 31536000).
	ExpirationSeconds int64 `json:"expirationSeconds,omitempty"`
}

// TokenResponse carries a new token. It is shown once: only its hash is kept.
type TokenResponse struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	ID         string    `json:"id"`
	Token      string    `json:"token"`
	ExpiresAt  time.Time `json:"expiresAt"`
}

func tokenID(tok string) string {
	parts := strings.SplitN(strings.TrimPrefix(tok, tokenPrefix), ".", 2)
	if len(parts[0]) == 2*tokenIDBytes {
		return parts[0]
	}
	return "(malformed)"
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func (t *tokenStore) authenticate(ctx context.Context, tok string) (Principal, error) {
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	id, secret, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || len(id) != 2*tokenIDBytes || secret == "" {
		return Principal{}, errors.New("malformed (a service account token looks like nxsa1.<id>.<secret>)")
	}
	if _, err := hex.DecodeString(id); err != nil {
		return Principal{}, errors.New("malformed id")
	}
	resp, err := t.cli.Get(ctx, t.prefix+id)
	if err != nil {
		return Principal{}, fmt.Errorf("look it up: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Principal{}, fmt.Errorf("token %s does not exist (it was revoked, or its account deleted)", id)
	}
	var rec tokenRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return Principal{}, fmt.Errorf("token %s: damaged record: %w", id, err)
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(rec.Hash)) != 1 {
		return Principal{}, fmt.Errorf("token %s: wrong secret", id)
	}
	if !t.now().Before(rec.Expires) {
		return Principal{}, fmt.Errorf("token %s expired at %s: ask for a new one", id, rec.Expires.UTC().Format(time.RFC3339))
	}
	// The account must still exist, and be the one the token was made for.
	saKey := storage.DefaultPrefix + serviceAccountsPlural + "/" + rec.Namespace + "/" + rec.ServiceAccount
	sa, err := t.cli.Get(ctx, saKey)
	if err != nil {
		return Principal{}, fmt.Errorf("look up its service account: %w", err)
	}
	if len(sa.Kvs) == 0 || !strings.Contains(string(sa.Kvs[0].Value), `"uid":"`+rec.ServiceAccountUID+`"`) {
		return Principal{}, fmt.Errorf("token %s: service account %s/%s was deleted", id, rec.Namespace, rec.ServiceAccount)
	}
	return Principal{
		User: authz.User{Kind: authz.PrincipalServiceAccount, Name: rec.ServiceAccount, Namespace: rec.Namespace},
		ID:   "serviceaccount:" + rec.Namespace + "/" + rec.ServiceAccount,
	}, nil
}

func (s *Server) createToken(w http.ResponseWriter, r *request) error {
	req := TokenRequest{}
	if r.http.ContentLength != 0 {
		b, err := s.readBody(r)
		if err != nil && r.http.ContentLength > 0 {
			return err
		}
		if len(b) > 0 {
			dec := json.NewDecoder(strings.NewReader(string(b)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				return badRequest("token request: %v (fields: expirationSeconds)", err)
			}
		}
	}
	life := defaultTokenLifetime
	if req.ExpirationSeconds != 0 {
		life = time.Duration(req.ExpirationSeconds) * time.Second
		if life < minTokenLifetime || life > maxTokenLifetime {
			return invalid(r, types.FieldErrors{{Field: "expirationSeconds", Detail: fmt.Sprintf("must be %d-%d", int(minTokenLifetime.Seconds()), int(maxTokenLifetime.Seconds()))}})
		}
	}
	sa, err := s.store.Get(r.http.Context(), r.res, r.namespace, r.name)
	if err != nil {
		return err
	}
	var idb [tokenIDBytes]byte
	var sec [tokenSecretBytes]byte
	_, _ = rand.Read(idb[:])
	_, _ = rand.Read(sec[:])
	id, secret := hex.EncodeToString(idb[:]), base64.RawURLEncoding.EncodeToString(sec[:])
	now := s.now().UTC()
	rec := tokenRecord{Namespace: r.namespace, ServiceAccount: r.name, ServiceAccountUID: sa.GetObjectMeta().UID,
		Hash: hashSecret(secret), Created: now, Expires: now.Add(life).Truncate(time.Second)}
	data, _ := json.Marshal(rec)
	if _, err := s.client.Put(r.http.Context(), s.tokens.prefix+id, string(data)); err != nil {
		return fmt.Errorf("store token: %w", err)
	}
	resp := TokenResponse{APIVersion: types.APIVersion, Kind: "ServiceAccountToken", ID: id, Token: tokenPrefix + id + "." + secret, ExpiresAt: rec.Expires}
	// The audit record names the token, never its secret.
	rec2 := r.auditRecord(http.StatusCreated)
	rec2.Event = audit.EventTokenCreated
	rec2.Annotations = map[string]string{"tokenID": id, "serviceAccount": r.namespace + "/" + r.name, "expires": rec.Expires.Format(time.RFC3339)}
	rec2.Request = nil
	if err := s.audit.Write(context.WithoutCancel(r.http.Context()), rec2); err != nil {
		_, _ = s.client.Delete(context.WithoutCancel(r.http.Context()), s.tokens.prefix+id)
		return problem(http.StatusServiceUnavailable, "Unavailable", "the token could not be audited, so it was not issued: %v", err).withRetry(5)
	}
	r.code = http.StatusCreated
	return writeJSON(w, http.StatusCreated, resp)
}

func (s *Server) deleteToken(w http.ResponseWriter, r *request) error {
	key := s.tokens.prefix + r.subName
	resp, err := s.client.Get(r.http.Context(), key)
	if err != nil {
		return err
	}
	var rec tokenRecord
	if len(resp.Kvs) == 0 || json.Unmarshal(resp.Kvs[0].Value, &rec) != nil || rec.Namespace != r.namespace || rec.ServiceAccount != r.name {
		return problem(http.StatusNotFound, "NotFound", "service account %s/%s has no token %s", r.namespace, r.name, r.subName)
	}
	if _, err := s.client.Delete(r.http.Context(), key); err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"id": r.subName, "status": "revoked"})
	return s.finish(w, r, http.StatusOK, body)
}
