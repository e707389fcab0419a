package process

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/test/testkit"
)

// The reference engine (cmd/devengine) as a process, driven through
// testkit's client of its HTTP API.

// devEngine is a reference engine process and its addresses.
type devEngine struct {
	*testkit.Process
	httpAddr, grpcAddr, kafkaAddr string
	api                           *testkit.EngineAPI
}

// startDevEngine runs the reference engine on free ports of 127.0.0.1 with
// vars (DEVENGINE_*) and PATH as its environment, and waits until it
// listens. Ports taken by another process between their pick and the
// engine's bind are picked again.
func startDevEngine(t *testing.T, vars map[string]string) *devEngine {
	t.Helper()
	env := map[string]string{"PATH": os.Getenv("PATH")}
	for k, v := range vars {
		env[k] = v
	}
	for attempt := 1; ; attempt++ {
		e := &devEngine{httpAddr: testkit.FreeAddr(t), grpcAddr: testkit.FreeAddr(t), kafkaAddr: testkit.FreeAddr(t)}
		cmd := testkit.Command(devengineBinary(t), env, "-http", e.httpAddr, "-grpc", e.grpcAddr, "-kafka", e.kafkaAddr)
		e.Process = testkit.Start(t, "devengine", cmd)
		listening := false
		e.WaitForOutput(t, startTimeout, "that it listens, or that a port was taken", func() bool {
			listening = len(e.LinesContaining("reference engine listening")) > 0
			select {
			case <-e.Exited():
				return true
			default:
				return listening
			}
		})
		if listening {
			e.api = testkit.NewEngineAPI(e.httpAddr)
			return e
		}
		require.Contains(t, e.Stderr(), "address already in use", "the engine exited before listening")
		require.Less(t, attempt, 3, "the engine could not listen: %s", e.Stderr())
	}
}

// submitPayment submits a payment-processor task and returns it.
func (e *devEngine) submitPayment(t *testing.T, amount float64, customer string) testkit.EngineTask {
	t.Helper()
	return e.api.Submit(t, testkit.TaskSpec{ExecutorType: "payment-processor", TimeoutSeconds: 60,
		Context: map[string]any{"totalAmount": amount, "customerId": customer}})
}
