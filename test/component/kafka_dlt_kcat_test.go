package component

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
)

// TestKafkaDeadLetterReadableWithKcat: kcat (librdkafka) writes a task
// record no result can name, with a header of its own; the real service,
// with its default settings, copies it to the dead-letter topic and counts
// it; kcat reads the copy back, and the test checks its key, its value
// (bytes unchanged) and its headers as kcat prints them (-f with %h:
// name=value pairs joined by commas).
func TestKafkaDeadLetterReadableWithKcat(t *testing.T) {
	kcat := kcatBinary(t)
	broker := kafkatest.Start(t)
	addr := strings.Join(broker.Addrs(), ",")
	r := startKafkaService(t, broker, kafkaEnv(broker))

	const value = `{"runId":42,"nodeId":"n"}`
	ctx := deadline(t, 20*time.Second)
	produce := exec.CommandContext(ctx, kcat, "-b", addr, "-t", kafkatest.TasksTopic, "-P", "-k", "bad-key",
		"-H", "x-origin=kcat", "-X", "acks=all")
	produce.Stdin = strings.NewReader(value + "\n")
	out, err := produce.CombinedOutput()
	require.NoError(t, err, "kcat -P: %s", out)

	// kcat waits for the copy (-c 1), within the deadline.
	ctx = deadline(t, 30*time.Second)
	consume := exec.CommandContext(ctx, kcat, "-b", addr, "-t", kafkatest.DeadLetterTopic, "-C", "-o", "beginning", "-c", "1",
		"-f", "key=%k\nvalue=%s\nheaders=%h\n")
	var stderr bytes.Buffer
	consume.Stderr = &stderr
	out, err = consume.Output()
	require.NoError(t, err, "kcat -C: %s; service logs:\n%s", stderr.String(), r.logs.text())
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	require.Len(t, lines, 3, "kcat output %q", out)
	assert.Equal(t, "key=bad-key", lines[0])
	assert.Equal(t, "value="+value, lines[1], "the original value, unchanged")
	headers := lines[2]
	for _, want := range []string{
		"headers=x-origin=kcat,", // the original header first
		"dlt-original-topic=" + kafkatest.TasksTopic,
		"dlt-original-partition=",
		"dlt-original-offset=0",
		"dlt-error-class=unaddressable",
		"dlt-error-message=invalid task",
		"dlt-time=" + time.Now().UTC().Format("2006-01-02T"),
	} {
		assert.Contains(t, headers, want)
	}

	require.Eventually(t, func() bool {
		v, ok := metricValue(t, r.baseURL, `gamelan_executor_kafka_dead_letters_total{reason="unaddressable"}`)
		return ok && v == 1
	}, conditionTimeout, conditionTick, "the dead letter is counted")
	require.NoError(t, broker.WaitForLag(deadline(t, conditionTimeout), kafkaGroup, kafkatest.TasksTopic, 0), "committed after")
}
