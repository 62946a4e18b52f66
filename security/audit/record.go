package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Level is how much of a record is written.
type Level int

const (
	// None writes nothing.
	None Level = iota
	// Metadata writes who did what to which object, when, and the outcome.
	Metadata
	// Request adds the request body.
	Request
	// RequestResponse adds the response body.
	RequestResponse
)

var levelNames = [...]string{"None", "Metadata", "Request", "RequestResponse"}

func (l Level) String() string {
	if l < 0 || int(l) >= len(levelNames) {
		return fmt.Sprintf("Level(%d)", int(l))
	}
	return levelNames[l]
}

// ParseLevel parses a level's name (None, Metadata, Request, RequestResponse).
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if s == n {
			return Level(i), nil
		}
	}
	return None, fmt.Errorf("unknown audit level %q (use None, Metadata, Request or RequestResponse)", s)
}

func (l Level) MarshalText() ([]byte, error) {
	if l < 0 || int(l) >= len(levelNames) {
		return nil, fmt.Errorf("unknown audit level %d", int(l))
	}
	return []byte(levelNames[l]), nil
}

func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Event kinds. EventRequest is an API request; the others happen outside one.
const (
	EventRequest           = "request"
	EventAuthnFailed       = "authn-failed"
	EventCertificateIssued = "certificate-issued"
	EventTokenCreated      = "token-created"
	// EventLogRecovered is written by Open after it cut a torn last line.
	EventLogRecovered = "log-recovered"
)

// User kinds, after the principal's identity.
const (
	UserKindUser           = "user"
	UserKindNode           = "node"
	UserKindServer         = "server"
	UserKindServiceAccount = "serviceaccount"
)

// User is the principal a record is about.
type User struct {
	Name   string   `json:"name,omitempty"`
	Groups []string `json:"groups,omitempty"`
	// Kind is user, node, server or serviceaccount.
	Kind string `json:"kind,omitempty"`
	// ID is the principal's SPIFFE ID, as its certificate carries it.
	ID string `json:"id,omitempty"`
}

// Check is the outcome of one of the three checks of triple validation.
type Check struct {
	Allowed bool   `json:"allowed"`
	Reason  string `json:"reason,omitempty"`
}

// Decision holds the three checks a request went through; a check not
// reached (because an earlier one denied) is nil.
type Decision struct {
	Authn    *Check `json:"authn,omitempty"`
	Identity *Check `json:"identity,omitempty"`
	Authz    *Check `json:"authz,omitempty"`
}

// Denied reports whether any check that ran denied.
func (d Decision) Denied() bool {
	for _, c := range []*Check{d.Authn, d.Identity, d.Authz} {
		if c != nil && !c.Allowed {
			return true
		}
	}
	return false
}

// Record is one audited event. Log.Write fills Seq, Time, Level and Prev;
// the caller fills the rest.
type Record struct {
	Seq   uint64    `json:"seq"`
	Time  time.Time `json:"time"`
	Level Level     `json:"level"`
	// Event is EventRequest for API requests (the default when empty).
	Event       string   `json:"event"`
	User        User     `json:"user"`
	SourceIP    string   `json:"sourceIP,omitempty"`
	Verb        string   `json:"verb,omitempty"`
	Resource    string   `json:"resource,omitempty"`
	Subresource string   `json:"subresource,omitempty"`
	Namespace   string   `json:"namespace,omitempty"`
	Name        string   `json:"name,omitempty"`
	URI         string   `json:"uri,omitempty"`
	Code        int      `json:"code,omitempty"`
	Decision    Decision `json:"decision"`
	// Message says what happened, for events (e.g. why authentication failed).
	Message string `json:"message,omitempty"`
	// Annotations carry an event's details, e.g. a certificate's serial and
	// identity or a token's id. Never a secret: they are written as given.
	Annotations map[string]string `json:"annotations,omitempty"`
	// Request and Response are the bodies, JSON; written only at the Request
	// and RequestResponse levels, after redaction.
	Request  json.RawMessage `json:"request,omitempty"`
	Response json.RawMessage `json:"response,omitempty"`
	Prev     string          `json:"prev"`
}

// Mutating reports whether the record's verb changes state. Anything but
// get, list and watch counts, so a verb the policy does not know is treated
// as a write.
func (r *Record) Mutating() bool {
	switch r.Verb {
	case "get", "list", "watch", "":
		return false
	}
	return true
}

// mustKeep reports whether the record is written whatever the policy says:
// mutations, denials and events other than requests.
func (r *Record) mustKeep() bool {
	return r.Mutating() || r.Decision.Denied() || (r.Event != "" && r.Event != EventRequest) ||
		r.Code == 401 || r.Code == 403
}

// ZeroHash is the prev of the first record of a log.
var ZeroHash = hex.EncodeToString(make([]byte, sha256.Size))

const (
	hashKey = `,"hash":"`
	// suffixLen is the length of `,"hash":"<64 hex>"}`.
	suffixLen = len(hashKey) + 2*sha256.Size + 2
	// MaxLineBytes bounds one line; Write shortens bodies to stay under it
	// and Verify reports a longer line as damage.
	MaxLineBytes = 1 << 20
	// maxBodyBytes bounds each body; a larger one is replaced by a note.
	maxBodyBytes = 256 << 10
)

// encodeLine returns the line for r (which has Prev set), without newline,
// and its hash.
func encodeLine(r *Record) ([]byte, string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return nil, "", fmt.Errorf("encode audit record: %w", err)
	}
	body := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	sum := sha256.Sum256(body)
	h := hex.EncodeToString(sum[:])
	line := make([]byte, 0, len(body)+suffixLen)
	line = append(line, body[:len(body)-1]...)
	line = append(line, hashKey...)
	line = append(line, h...)
	line = append(line, `"}`...)
	return line, h, nil
}

// lineHead is what verification reads from a line besides its hash.
type lineHead struct {
	Seq  uint64 `json:"seq"`
	Prev string `json:"prev"`
}

// parsedLine is one line checked on its own: its fields and whether its
// stored hash matches its bytes.
type parsedLine struct {
	seq      uint64
	prev     string
	hash     string // as stored
	computed string // recomputed from the bytes
}

var errNotRecord = errors.New("not an audit record")

// parseLine checks a line (without newline) on its own. An error means it
// is not a record at all; a record whose bytes were changed parses with
// hash != computed.
func parseLine(line []byte) (parsedLine, error) {
	if len(line) > MaxLineBytes {
		return parsedLine{}, fmt.Errorf("%w: %d bytes, more than the %d a record may have", errNotRecord, len(line), MaxLineBytes)
	}
	if len(line) < suffixLen+2 || line[0] != '{' {
		return parsedLine{}, fmt.Errorf("%w: does not start with { or is too short", errNotRecord)
	}
	cut := len(line) - suffixLen
	if !bytes.Equal(line[cut:cut+len(hashKey)], []byte(hashKey)) || !bytes.HasSuffix(line, []byte(`"}`)) {
		return parsedLine{}, fmt.Errorf(`%w: does not end with its "hash" member`, errNotRecord)
	}
	stored := string(line[cut+len(hashKey) : len(line)-2])
	if !isLowerHex(stored) {
		return parsedLine{}, fmt.Errorf("%w: hash %q is not 64 lowercase hex digits", errNotRecord, stored)
	}
	var head lineHead
	if err := json.Unmarshal(line, &head); err != nil {
		return parsedLine{}, fmt.Errorf("%w: %v", errNotRecord, err)
	}
	if head.Seq == 0 {
		return parsedLine{}, fmt.Errorf("%w: no seq", errNotRecord)
	}
	if !isLowerHex(head.Prev) {
		return parsedLine{}, fmt.Errorf("%w: prev %q is not 64 lowercase hex digits", errNotRecord, head.Prev)
	}
	h := sha256.New()
	h.Write(line[:cut])
	h.Write([]byte("}"))
	return parsedLine{seq: head.Seq, prev: head.Prev, hash: stored, computed: hex.EncodeToString(h.Sum(nil))}, nil
}

func isLowerHex(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
