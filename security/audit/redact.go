package audit

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Redacted replaces every value a redactor removes.
const Redacted = "<redacted>"

// Redactor returns body (a request or response of one resource) with what
// must not be logged replaced. It must not fail: when it cannot read the
// body it returns something that reveals nothing of it, such as
// RedactAll's result.
type Redactor func(body json.RawMessage) json.RawMessage

// redactedAll is a whole body replaced.
var redactedAll = json.RawMessage(`"` + Redacted + `"`)

// RedactAll replaces the whole body.
func RedactAll(json.RawMessage) json.RawMessage { return redactedAll }

// RedactSecret keeps the shape of a Secret (or a list of them, or a patch)
// and replaces every value in it, except the object's identity: kind,
// apiVersion, type, and metadata other than annotations (whose values may
// hold a copy of the object, as kubectl's last-applied annotation does).
// Keys are kept, so the log still says which entries a request touched.
// A body that is not JSON is replaced whole.
func RedactSecret(body json.RawMessage) json.RawMessage {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return redactedAll
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(redactSecretValue(v, true)); err != nil {
		return redactedAll
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n"))
}

// redactSecretValue redacts v; top is true for an object that may be a
// Secret itself (the body, or an element of a list's items).
func redactSecretValue(v any, top bool) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			switch {
			case top && (k == "kind" || k == "apiVersion" || k == "type"):
				if _, ok := e.(string); !ok {
					v[k] = redactSecretValue(e, false)
				}
			case top && k == "metadata":
				v[k] = redactMetadata(e)
			case top && k == "items":
				if items, ok := e.([]any); ok {
					for i := range items {
						items[i] = redactSecretValue(items[i], true)
					}
				} else {
					v[k] = redactSecretValue(e, false)
				}
			default:
				v[k] = redactSecretValue(e, false)
			}
		}
		return v
	case []any:
		for i := range v {
			v[i] = redactSecretValue(v[i], false)
		}
		return v
	case nil:
		return nil
	default:
		return Redacted
	}
}

func redactMetadata(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return redactSecretValue(v, false)
	}
	for k, e := range m {
		if k == "annotations" {
			m[k] = redactSecretValue(e, false)
		}
	}
	return m
}

// isSecrets reports whether resource names Secrets, whose values are always
// redacted.
func isSecrets(resource string) bool {
	r := strings.ToLower(resource)
	return r == "secrets" || r == "secret"
}
