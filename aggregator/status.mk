# aggregator/status.mk — fedmq-status, a terminal view of a fleet (the
# dashboard's facts without a browser): aggregator/fedmq_status.c on
# libfedmq. Kept apart from prog.mk so each file has one owner.
PROGS += $(BUILD)/bin/fedmq-status
$(BUILD)/bin/fedmq-status: $(BUILD)/obj/aggregator/fedmq_status.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) $(filter-out $(LIB),$^) $(LIB) -o $@ $(LIBS_ALL)
