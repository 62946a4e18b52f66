package api

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"nexus.dev/nexus/api/types"
)

// openAPIDoc is the OpenAPI 3 document of the API, generated once from the
// Go types, so it cannot drift from what the server decodes.
var openAPIDoc = sync.OnceValue(func() []byte {
	g := &schemaGen{schemas: map[string]any{}}
	paths := map[string]any{}
	for _, r := range types.AllResources() {
		ref := g.schemaOf(reflect.TypeOf(r.New()).Elem())
		list := map[string]any{"type": "object", "properties": map[string]any{
			"apiVersion": map[string]any{"type": "string"}, "kind": map[string]any{"type": "string"},
			"metadata": g.schemaOf(reflect.TypeFor[types.ListMeta]()),
			"items":    map[string]any{"type": "array", "items": ref},
		}}
		g.schemas[r.Kind+"List"] = list
		listRef := map[string]any{"$ref": "#/components/schemas/" + r.Kind + "List"}
		coll, item := "/v1/"+r.Plural, "/v1/"+r.Plural+"/{name}"
		params := []any{pathParam("name")}
		if r.Namespaced {
			coll, item = "/v1/namespaces/{namespace}/"+r.Plural, "/v1/namespaces/{namespace}/"+r.Plural+"/{name}"
			params = []any{pathParam("namespace"), pathParam("name")}
			paths["/v1/"+r.Plural] = map[string]any{"get": op("list "+r.Plural+" in every namespace", listRef, listParams())}
		}
		collParams := params[:len(params)-1]
		paths[coll] = map[string]any{
			"parameters": collParams,
			"get":        op("list or watch (?watch=true: JSON lines of {type, object}) "+r.Plural, listRef, listParams()),
			"post":       withBody(op("create a "+r.Kind, ref, nil), ref, "application/json"),
		}
		paths[item] = map[string]any{
			"parameters": params,
			"get":        op("read a "+r.Kind, ref, nil),
			"put":        withBody(op("replace a "+r.Kind+" (409 if metadata.resourceVersion is stale)", ref, nil), ref, "application/json"),
			"patch":      withBody(op("change a "+r.Kind+" with a JSON merge patch (RFC 7386)", ref, nil), map[string]any{"type": "object"}, patchContentType),
			"delete":     op("delete a "+r.Kind+" (?resourceVersion= for a precondition)", ref, []any{queryParam("resourceVersion")}),
		}
		if r.HasStatus {
			paths[item+"/status"] = map[string]any{
				"parameters": params,
				"get":        op("read a "+r.Kind+"'s status", ref, nil),
				"put":        withBody(op("replace a "+r.Kind+"'s status", ref, nil), ref, "application/json"),
				"patch":      withBody(op("change a "+r.Kind+"'s status with a JSON merge patch", ref, nil), map[string]any{"type": "object"}, patchContentType),
			}
		}
	}
	var logQuery []any
	for _, n := range logParams {
		logQuery = append(logQuery, queryParam(n))
	}
	logOp := op("read an Instance's container log (follow=true streams it as it is written)", nil, logQuery)
	logOp["responses"].(map[string]any)["200"] = map[string]any{"description": "the log, one line of output per line", "content": map[string]any{"text/plain": map[string]any{"schema": map[string]any{"type": "string"}}}}
	paths["/v1/namespaces/{namespace}/instances/{name}/log"] = map[string]any{
		"parameters": []any{pathParam("namespace"), pathParam("name")},
		"get":        logOp,
	}
	paths["/v1/nodes/{name}/heartbeat"] = map[string]any{
		"parameters": []any{pathParam("name")},
		"post":       op("renew (or grant) a node's heartbeat lease: the node itself or an admin", g.schemaOf(reflect.TypeFor[types.NodeHeartbeat]()), nil),
	}
	g.schemas["Problem"] = g.schemaOf(reflect.TypeFor[Problem]())
	doc := map[string]any{
		"openapi": "3.0.3",
		"info":    map[string]any{"title": "Nexus API", "version": types.APIVersion},
		"paths":   paths,
		"components": map[string]any{
			"schemas": g.schemas,
			"securitySchemes": map[string]any{
				"clientCertificate":   map[string]any{"type": "mutualTLS"},
				"serviceAccountToken": map[string]any{"type": "http", "scheme": "bearer"},
			},
		},
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	return b
})

func (s *Server) openAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDoc())
}

func pathParam(name string) any {
	return map[string]any{"name": name, "in": "path", "required": true, "schema": map[string]any{"type": "string"}}
}

func queryParam(name string) any {
	return map[string]any{"name": name, "in": "query", "schema": map[string]any{"type": "string"}}
}

func listParams() []any {
	var ps []any
	for _, n := range []string{"labelSelector", "fieldSelector", "limit", "continue", "watch", "resourceVersion", "timeoutSeconds"} {
		ps = append(ps, queryParam(n))
	}
	return ps
}

func op(summary string, resp any, params []any) map[string]any {
	o := map[string]any{
		"summary": summary,
		"responses": map[string]any{
			"200":     map[string]any{"description": "OK", "content": map[string]any{"application/json": map[string]any{"schema": resp}}},
			"default": map[string]any{"description": "a problem", "content": map[string]any{ProblemContentType: map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Problem"}}}},
		},
	}
	if params != nil {
		o["parameters"] = params
	}
	return o
}

func withBody(o map[string]any, schema any, contentType string) map[string]any {
	o["requestBody"] = map[string]any{"required": true, "content": map[string]any{contentType: map[string]any{"schema": schema}}}
	return o
}

// schemaGen turns Go types into OpenAPI schemas, naming each struct once.
type schemaGen struct{ schemas map[string]any }

var (
	timeType      = reflect.TypeFor[time.Time]()
	cpuType       = reflect.TypeFor[types.MilliCPU]()
	bytesType     = reflect.TypeFor[types.Bytes]()
	intOrPctType  = reflect.TypeFor[types.IntOrPercent]()
	fieldErrsType = reflect.TypeFor[types.FieldErrors]()
)

func (g *schemaGen) schemaOf(t reflect.Type) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case cpuType:
		return map[string]any{"type": "string", "description": "CPU: cores (\"0.5\", \"2\") or millicores (\"500m\")", "example": "500m"}
	case bytesType:
		return map[string]any{"type": "string", "description": "bytes, with an optional suffix Ki Mi Gi Ti or k M G T", "example": "256Mi"}
	case intOrPctType:
		return map[string]any{"description": "a count or a percentage such as \"25%\"", "oneOf": []any{map[string]any{"type": "integer"}, map[string]any{"type": "string", "pattern": `^[0-9]+%$`}}}
	case fieldErrsType:
		return map[string]any{"type": "array", "items": g.schemaOf(t.Elem())}
	}
	switch t.Kind() {
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "format": "byte"}
		}
		return map[string]any{"type": "array", "items": g.schemaOf(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schemaOf(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		name := t.Name()
		if name == "" {
			return g.structSchema(t)
		}
		if _, ok := g.schemas[name]; !ok {
			g.schemas[name] = nil // placeholder: stops recursion
			g.schemas[name] = g.structSchema(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{}
}

func (g *schemaGen) structSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" || (!f.IsExported() && !f.Anonymous) {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
				walk(f.Type)
				continue
			}
			if name == "" {
				name = f.Name
			}
			props[name] = g.schemaOf(f.Type)
			if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") && f.Type.Kind() != reflect.Pointer {
				required = append(required, name)
			}
		}
	}
	walk(t)
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}
