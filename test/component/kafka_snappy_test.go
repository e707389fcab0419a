package component

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
)

// TestKafkaJavaFramedSnappyTask checks that the service decodes a task
// batch compressed the way the Gamelan engine's Java client compresses it:
// snappy in xerial framing (the Java client's SnappyOutputStream), which is
// also what sarama writes (klauspost/compress/snappy/xerial), whereas
// franz-go writes unframed snappy and Debian's kcat none against kfake
// (see TestKafkaTaskFromKcat). The task is answered COMPLETED.
func TestKafkaJavaFramedSnappyTask(t *testing.T) {
	broker := kafkatest.Start(t)
	startKafkaService(t, broker, kafkaEnv(broker))
	tasks := broker.Tasks(t)
	results := broker.Results(t)

	sc := sarama.NewConfig()
	sc.Version = sarama.V2_8_0_0
	sc.Metadata.AllowAutoTopicCreation = false
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Compression = sarama.CompressionSnappy
	producer, err := sarama.NewSyncProducer(broker.Addrs(), sc)
	require.NoError(t, err)
	defer producer.Close()

	msg := kafkaTaxTask("run-snappy", 7)
	msg.Context["description"] = strings.Repeat("framed snappy as the Java client writes it; ", 10)
	value, err := json.Marshal(msg)
	require.NoError(t, err)
	_, _, err = producer.SendMessage(&sarama.ProducerMessage{Topic: kafkatest.TasksTopic, Key: sarama.StringEncoder(msg.RunID), Value: sarama.ByteEncoder(value)})
	require.NoError(t, err)

	require.NoError(t, tasks.WaitFor(deadline(t, conditionTimeout), 1))
	assert.Equal(t, "snappy", tasks.Records()[0].Compression, "the task batch is snappy-compressed")

	require.NoError(t, results.WaitForUnique(deadline(t, 20*time.Second), 1))
	res := results.UniqueResults()[kafkatest.TaskKey(msg)]
	checkKafkaTaxResult(t, res, msg)
}
