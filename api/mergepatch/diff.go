package mergepatch

import (
	"encoding/json"
	"fmt"
	"reflect"
)

// Diff returns the merge patch that turns orig into modified: members
// that were added or changed, null for members that were removed, objects
// recursively. Arrays are compared whole, as merge patches replace them.
// Apply(orig, Diff(orig, modified)) equals modified when modified holds no
// null members (a merge patch cannot set a member to null).
func Diff(orig, modified []byte) ([]byte, error) {
	var o, m any
	if err := decode(orig, &o); err != nil {
		return nil, fmt.Errorf("the original is not valid JSON: %w", err)
	}
	if err := decode(modified, &m); err != nil {
		return nil, fmt.Errorf("the modified document is not valid JSON: %w", err)
	}
	return json.Marshal(diff(o, m))
}

func diff(orig, modified any) any {
	om, ok1 := orig.(map[string]any)
	mm, ok2 := modified.(map[string]any)
	if !ok1 || !ok2 {
		return modified
	}
	patch := map[string]any{}
	for k, ov := range om {
		mv, ok := mm[k]
		switch {
		case !ok:
			patch[k] = nil
		case !reflect.DeepEqual(ov, mv):
			patch[k] = diff(ov, mv)
		}
	}
	for k, mv := range mm {
		if _, ok := om[k]; !ok {
			patch[k] = mv
		}
	}
	return patch
}
