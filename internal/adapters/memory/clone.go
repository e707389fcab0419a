package memory

import (
	"maps"
	"slices"

	"github.com/gamelan-go/executor/internal/domain"
)

// The engine copies everything that crosses its boundary, so that neither
// the runtime nor a test can change a record after the fact by mutating a
// map or slice it still holds.

func cloneTask(t domain.Task) domain.Task {
	t.Context = cloneMap(t.Context)
	t.Configuration = cloneMap(t.Configuration)
	return t
}

func cloneResult(r domain.Result) domain.Result {
	r.Output = cloneMap(r.Output)
	if r.Error != nil {
		info := *r.Error
		info.Context = cloneMap(info.Context)
		r.Error = &info
	}
	return r
}

func cloneRegistration(r domain.Registration) domain.Registration {
	r.Descriptor.SupportedNodeTypes = slices.Clone(r.Descriptor.SupportedNodeTypes)
	r.Metadata = maps.Clone(r.Metadata)
	return r
}

// cloneMap copies m and, recursively, the maps and slices inside it (the
// shapes JSON and protobuf Struct values take). Other values are copied as
// they are.
func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = cloneValue(v)
	}
	return c
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return cloneMap(v)
	case []any:
		if v == nil {
			return v
		}
		c := make([]any, len(v))
		for i, e := range v {
			c[i] = cloneValue(e)
		}
		return c
	case map[string]string:
		return maps.Clone(v)
	case []string:
		return slices.Clone(v)
	default:
		return v
	}
}
