# aggregator/: the aggregator's programs. Each links libfedmq.
#   fedmq-train   central training and in-process FedAvg (the reference)
PROGS += $(BUILD)/bin/fedmq-train

$(BUILD)/bin/fedmq-train: $(BUILD)/obj/aggregator/fedmq_train.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) $^ -o $@ $(LIBS_ALL)
