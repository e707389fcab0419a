package deploy

import (
	"github.com/gamelan-go/executor/cmd/executor/service"
)

// executorVariables are the names of every variable the executor service
// reads, from its configuration's own declaration (the README's table).
func executorVariables() []string {
	var names []string
	for _, v := range service.Variables() {
		names = append(names, v.Name)
	}
	return names
}
