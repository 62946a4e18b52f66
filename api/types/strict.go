package types

// DecodeStrict reads one YAML or JSON document into v, which may be any Go
// value (the client's config file uses it, not only resources), as
// strictly as Decode: every unknown field, and the first value of a wrong
// type, is an error naming its path (clusters[0].sever: unknown field).
func DecodeStrict(data []byte, v any) error {
	js, err := ToJSON(data)
	if err != nil {
		return err
	}
	return decodeStrict(js, v)
}
