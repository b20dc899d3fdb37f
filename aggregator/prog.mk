# aggregator/: the aggregator's programs. Each links libfedmq.
#   fedmq-train   central training and in-process FedAvg (the reference)
PROGS += $(BUILD)/bin/fedmq-train

$(BUILD)/bin/fedmq-train: $(BUILD)/obj/aggregator/fedmq_train.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) $(filter-out $(LIB),$^) $(LIB) -o $@ $(LIBS_ALL)

# The aggregator's core (agg.c) is a library object of the aggregator's
# programs and of test/test_agg.c.
AGG_OBJS := $(BUILD)/obj/aggregator/agg.o
$(BUILD)/test/test_agg: $(AGG_OBJS)
$(BUILD)/obj/test/test_agg.o: CPPFLAGS_ALL += -Iaggregator

#   fedmq-aggregator   rounds over MQTT (agg.c + common/mqtt.c)
PROGS += $(BUILD)/bin/fedmq-aggregator
$(BUILD)/bin/fedmq-aggregator: $(BUILD)/obj/aggregator/fedmq_aggregator.o $(AGG_OBJS) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) $(filter-out $(LIB),$^) $(LIB) -o $@ $(LIBS_ALL)

# test/it_trust_runtime.sh signs, verifies, seals and opens by hand with
# test/tools/trust_tool.
check-it: $(BUILD)/tools/trust_tool
