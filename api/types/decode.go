package types

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"

	"sigs.k8s.io/yaml"
)

// DecodeError is a document that could not be read as an object. Fields
// holds field-level problems (unknown fields, wrong types) when known.
type DecodeError struct {
	Msg    string
	Fields FieldErrors
}

func (e *DecodeError) Error() string {
	if len(e.Fields) > 0 {
		return e.Msg + ": " + e.Fields.Error()
	}
	return e.Msg
}

// Decode reads one object of resource r from JSON (or YAML, which is turned
// into JSON first). Unknown fields and wrong types are errors naming the
// field; apiVersion and kind, when given, must match r. It neither defaults
// nor validates.
func Decode(data []byte, r *Resource) (Object, error) {
	js, err := ToJSON(data)
	if err != nil {
		return nil, err
	}
	if o, ok := decodeFast(js, r); ok {
		return o, nil
	}
	return decodeSlow(js, r)
}

// decodeSlow reads js as an object of r, saying what is wrong if it is not
// one.
func decodeSlow(js []byte, r *Resource) (Object, error) {
	tm, err := peekType(js)
	if err != nil {
		return nil, err
	}
	if tm.APIVersion != "" && tm.APIVersion != APIVersion {
		return nil, &DecodeError{Msg: fmt.Sprintf("apiVersion %q is not served: use %q", tm.APIVersion, APIVersion)}
	}
	if tm.Kind != "" && tm.Kind != r.Kind {
		return nil, &DecodeError{Msg: fmt.Sprintf("kind %q does not match the resource %s (kind %s)", tm.Kind, r.Plural, r.Kind)}
	}
	o := r.New()
	if err := decodeStrict(js, o); err != nil {
		return nil, err
	}
	*o.GetTypeMeta() = TypeMeta{APIVersion: APIVersion, Kind: r.Kind}
	return o, nil
}

// DecodeAny reads one object whose kind names its resource, as `nexus apply`
// files do.
func DecodeAny(data []byte) (Object, error) {
	js, err := ToJSON(data)
	if err != nil {
		return nil, err
	}
	tm, err := peekType(js)
	if err != nil {
		return nil, err
	}
	if tm.Kind == "" {
		return nil, &DecodeError{Msg: "kind is missing: every document names its kind (Workload, Service, ...)"}
	}
	r, ok := LookupResource(tm.Kind)
	if !ok || r.Kind != tm.Kind {
		return nil, &DecodeError{Msg: fmt.Sprintf("unknown kind %q (kinds: %s)", tm.Kind, kindNames())}
	}
	return Decode(js, r)
}

func kindNames() string {
	names := make([]string, len(resources))
	for i, r := range resources {
		names[i] = r.Kind
	}
	return strings.Join(names, ", ")
}

// ToJSON returns JSON as it is and converts YAML to JSON.
func ToJSON(data []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, &DecodeError{Msg: "empty document"}
	}
	if trimmed[0] == '{' {
		return trimmed, nil
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, &DecodeError{Msg: "not valid YAML or JSON: " + err.Error()}
	}
	if !bytes.HasPrefix(bytes.TrimSpace(js), []byte("{")) {
		return nil, &DecodeError{Msg: "the document is not an object (expected apiVersion, kind, metadata, ...)"}
	}
	return js, nil
}

// SplitDocuments splits a YAML stream at "---" lines, or returns a JSON
// document (or each element of a JSON array, or of a List's items) as they
// are. Empty documents are dropped.
func SplitDocuments(data []byte) ([][]byte, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		var docs [][]byte
		for {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err == io.EOF {
				break
			} else if err != nil {
				return nil, &DecodeError{Msg: "not valid JSON: " + err.Error()}
			}
			docs = append(docs, expandJSON(raw)...)
		}
		return docs, nil
	}
	var docs [][]byte
	for _, d := range splitYAML(data) {
		if len(bytes.TrimSpace(stripYAMLComments(d))) > 0 {
			docs = append(docs, d)
		}
	}
	return docs, nil
}

// expandJSON turns an array, or an object of kind List, into its elements.
func expandJSON(raw json.RawMessage) [][]byte {
	t := bytes.TrimSpace(raw)
	var items []json.RawMessage
	if len(t) > 0 && t[0] == '[' {
		if json.Unmarshal(t, &items) == nil {
			return rawList(items)
		}
	}
	var list struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if json.Unmarshal(t, &list) == nil && list.Kind == "List" {
		return rawList(list.Items)
	}
	return [][]byte{t}
}

func rawList(items []json.RawMessage) [][]byte {
	out := make([][]byte, len(items))
	for i, it := range items {
		out[i] = it
	}
	return out
}

func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	start := 0
	for i := 0; i <= len(data); {
		end := bytes.IndexByte(data[i:], '\n')
		line := data[i:]
		next := len(data) + 1
		if end >= 0 {
			line = data[i : i+end]
			next = i + end + 1
		}
		if l := bytes.TrimRight(line, " \t\r"); bytes.Equal(l, []byte("---")) || bytes.HasPrefix(l, []byte("--- ")) {
			docs = append(docs, data[start:i])
			start = min(next, len(data))
		}
		i = next
	}
	return append(docs, data[start:])
}

func stripYAMLComments(d []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(d, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}

func peekType(js []byte) (TypeMeta, error) {
	var tm struct {
		APIVersion any `json:"apiVersion"`
		Kind       any `json:"kind"`
	}
	if err := json.Unmarshal(js, &tm); err != nil {
		return TypeMeta{}, &DecodeError{Msg: "not valid JSON: " + err.Error()}
	}
	v, ok1 := tm.APIVersion.(string)
	k, ok2 := tm.Kind.(string)
	if (tm.APIVersion != nil && !ok1) || (tm.Kind != nil && !ok2) {
		return TypeMeta{}, &DecodeError{Msg: "apiVersion and kind must be strings"}
	}
	return TypeMeta{APIVersion: v, Kind: k}, nil
}

// decodeStrict unmarshals js into o and turns the decoder's complaints into
// field errors: every unknown field, with its path, and the first value of
// a wrong type.
func decodeStrict(js []byte, o any) error {
	var generic any
	if err := json.Unmarshal(js, &generic); err != nil {
		return &DecodeError{Msg: "not valid JSON: " + err.Error()}
	}
	var fields FieldErrors
	checkFields(generic, reflect.TypeOf(o), Path{}, &fields)
	if len(fields) > 0 {
		return &DecodeError{Msg: "bad fields", Fields: fields}
	}
	if err := json.Unmarshal(js, o); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &DecodeError{Msg: "wrong type", Fields: FieldErrors{{Field: te.Field, Detail: fmt.Sprintf("must be %s, not %s", jsonTypeName(te.Type), te.Value)}}}
		}
		// A type's own UnmarshalJSON (quantities, percentages) says what is wrong.
		return &DecodeError{Msg: "bad value: " + strings.TrimPrefix(err.Error(), "json: ")}
	}
	return nil
}

func jsonTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// checkFields walks a decoded JSON value beside the Go type it is meant for
// and records every object key the type has no field for, and every value a
// self-decoding type refuses, with its path. (The json package's
// DisallowUnknownFields stops at the first and does not say where it was.)
func checkFields(v any, t reflect.Type, p Path, errs *FieldErrors) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		// The type reads itself (quantities, percentages): try it here, where
		// the path is known; Unmarshal would report the error without it.
		if raw, err := json.Marshal(v); err == nil {
			if err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
				errs.add(p, "%v", err)
			}
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return // a type error, reported by Unmarshal
		}
		fields := jsonFields(t)
		for _, k := range sortedKeys(obj) {
			ft, ok := fields[k]
			if !ok {
				errs.add(p.Child(k), "unknown field")
				continue
			}
			checkFields(obj[k], ft, p.Child(k), errs)
		}
	case reflect.Map:
		if obj, ok := v.(map[string]any); ok {
			for _, k := range sortedKeys(obj) {
				checkFields(obj[k], t.Elem(), p.Key(k), errs)
			}
		}
	case reflect.Slice, reflect.Array:
		if list, ok := v.([]any); ok {
			for i, e := range list {
				checkFields(e, t.Elem(), p.Index(i), errs)
			}
		}
	}
}

// fieldCache holds jsonFields per struct type: building it by reflection
// on every decode was 3% of a create's CPU.
var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// jsonFields maps the JSON names of a struct's fields (with inline embedded
// structs flattened, as encoding/json does) to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string]reflect.Type)
	}
	f := buildJSONFields(t)
	fieldCache.Store(t, f)
	return f
}

func buildJSONFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range buildJSONFields(ft) {
					fields[k] = v
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

// decodeFast decodes a document that needs no message in one pass: it
// succeeds only when the document is an object of r with no unknown field,
// no value of a wrong type, no key that matches a field only by case
// (encoding/json would take it; the strict decoder does not) and the
// apiVersion and kind of r, when given. Anything else goes the slow way
// (decodeStrict), which says what is wrong. The strict decoder reads a
// document three times (type, a generic tree for the field check, the
// object): 10 % of the API server's CPU per create.
func decodeFast(js []byte, r *Resource) (Object, bool) {
	o := r.New()
	if !plainKeys(js, keyNamesOf(reflect.TypeOf(o))) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if dec.Decode(o) != nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false // more after the object: Unmarshal refuses it
	}
	tm := o.GetTypeMeta()
	if (tm.APIVersion != "" && tm.APIVersion != APIVersion) || (tm.Kind != "" && tm.Kind != r.Kind) {
		return nil, false
	}
	*tm = TypeMeta{APIVersion: APIVersion, Kind: r.Kind}
	return o, true
}

// keyNames are the JSON field names of a type and every type inside it,
// exact and in ASCII lower case; ambiguous holds the lower-case names two
// fields spell differently (a key may match one only by case).
type keyNames struct {
	exact     map[string]bool
	lower     map[string]string // lower case -> the exact name
	ambiguous map[string]bool
}

var keyNameCache sync.Map // reflect.Type -> *keyNames

func keyNamesOf(t reflect.Type) *keyNames {
	if k, ok := keyNameCache.Load(t); ok {
		return k.(*keyNames)
	}
	k := &keyNames{exact: map[string]bool{}, lower: map[string]string{}, ambiguous: map[string]bool{}}
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if seen[t] {
			return
		}
		seen[t] = true
		switch t.Kind() {
		case reflect.Struct:
			for name, ft := range jsonFields(t) {
				k.exact[name] = true
				l := strings.ToLower(name)
				if prev, ok := k.lower[l]; ok && prev != name {
					k.ambiguous[l] = true
				}
				k.lower[l] = name
				walk(ft)
			}
		case reflect.Map, reflect.Slice, reflect.Array:
			walk(t.Elem())
		}
	}
	walk(t)
	keyNameCache.Store(t, k)
	return k
}

// plainKeys reports whether every object key in js (valid JSON or not:
// the decoder judges that) is either a field name of the type or matches
// none by case: a key that differs from a field name only in case (or
// holds escapes or non-ASCII letters, which case folding may map onto one)
// needs the strict decoder. Map keys (labels, say) that match no field
// name are plain.
func plainKeys(js []byte, names *keyNames) bool {
	for i := 0; i < len(js); i++ {
		if js[i] != '"' {
			continue
		}
		start, plain := i+1, true
		for i++; i < len(js) && js[i] != '"'; i++ {
			switch c := js[i]; {
			case c == '\\':
				plain = false
				i++
			case c >= 0x80:
				plain = false
			}
		}
		if i >= len(js) {
			return true // unterminated: the decoder refuses it
		}
		j := i + 1
		for j < len(js) && (js[j] == ' ' || js[j] == '\t' || js[j] == '\n' || js[j] == '\r') {
			j++
		}
		if j >= len(js) || js[j] != ':' {
			continue // a value, not a key
		}
		key := string(js[start:i])
		if !plain {
			return false
		}
		l := strings.ToLower(key)
		if _, field := names.lower[l]; field && (!names.exact[key] || names.ambiguous[l]) {
			return false
		}
	}
	return true
}
