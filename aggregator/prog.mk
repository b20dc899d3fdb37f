# aggregator/: the aggregator's programs. Each links libfedmq.
#   fedmq-train   central training and in-process FedAvg (the reference)
PROGS += $(BUILD)/bin/fedmq-train

$(BUILD)/bin/fedmq-train: $(BUILD)/obj/aggregator/fedmq_train.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) $(filter-out $(LIB),$^) $(LIB) -o $@ $(LIBS_ALL)

# The aggregator's core (agg.c) and its strategies (strategy.c, the table
# and the core around every strategy; aggregator/strategy/<name>.c, one
# file each) are library objects of the aggregator's programs and of
# test/test_agg.c and test/test_strategy.c.
STRATEGY_OBJS := $(BUILD)/obj/aggregator/strategy.o \
  $(patsubst %.c,$(BUILD)/obj/%.o,$(sort $(wildcard aggregator/strategy/*.c)))
AGG_OBJS := $(BUILD)/obj/aggregator/agg.o $(STRATEGY_OBJS) $(BUILD)/obj/aggregator/gdelta.o $(BUILD)/obj/aggregator/classes.o
$(STRATEGY_OBJS): CPPFLAGS_ALL += -Iaggregator
$(BUILD)/test/test_agg: $(AGG_OBJS)
$(BUILD)/obj/test/test_agg.o: CPPFLAGS_ALL += -Iaggregator
$(BUILD)/test/test_strategy: $(AGG_OBJS)
$(BUILD)/obj/test/test_strategy.o: CPPFLAGS_ALL += -Iaggregator

# test/strategy_vectors.h holds what the numpy reference (test/
# strategy_ref.py) computes for every strategy; test_strategy compares
# against it and re-runs the script to check the file is current.
# `make strategy-vectors` rewrites it (deterministically).
strategy-vectors: | $(DEPS_STAMP)
	$(PYTHON) test/strategy_ref.py --out test/strategy_vectors.h
.PHONY: strategy-vectors

#   fedmq-aggregator   rounds over MQTT (agg.c + common/mqtt.c)
PROGS += $(BUILD)/bin/fedmq-aggregator
$(BUILD)/bin/fedmq-aggregator: $(BUILD)/obj/aggregator/fedmq_aggregator.o $(AGG_OBJS) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) $(filter-out $(LIB),$^) $(LIB) -o $@ $(LIBS_ALL)

# test/it_trust_runtime.sh signs, verifies, seals and opens by hand with
# test/tools/trust_tool.
check-it: $(BUILD)/tools/trust_tool
