// Package mergepatch applies JSON merge patches (RFC 7386): a patch object
// says which members to set, null removes a member, objects merge
// recursively and everything else (arrays included) replaces.
package mergepatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// MaxDepth bounds how deeply a patch may nest, so a hostile patch cannot
// exhaust the stack.
const MaxDepth = 64

// Apply returns doc with patch applied. Both must be JSON; a patch that is
// not an object replaces the whole document, as the RFC says.
func Apply(doc, patch []byte) ([]byte, error) {
	var p any
	if err := decode(patch, &p); err != nil {
		return nil, fmt.Errorf("the patch is not valid JSON: %w", err)
	}
	if depth(p, 0) > MaxDepth {
		return nil, fmt.Errorf("the patch nests more than %d levels", MaxDepth)
	}
	var d any
	if err := decode(doc, &d); err != nil {
		return nil, fmt.Errorf("the document is not valid JSON: %w", err)
	}
	return json.Marshal(merge(d, p))
}

func decode(b []byte, v *any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // keep large integers exact
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}

func merge(doc, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	d, ok := doc.(map[string]any)
	if !ok {
		d = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(d, k)
			continue
		}
		d[k] = merge(d[k], v)
	}
	return d
}

func depth(v any, d int) int {
	if d > MaxDepth {
		return d
	}
	max := d
	switch v := v.(type) {
	case map[string]any:
		for _, e := range v {
			max = maxInt(max, depth(e, d+1))
		}
	case []any:
		for _, e := range v {
			max = maxInt(max, depth(e, d+1))
		}
	}
	return max
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}
