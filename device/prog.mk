# device/: the device library (device.c core, run.c MQTT runner) and its
# programs. Each links libfedmq.
#   fedmq-device   one device over MQTT
#   fedmq-sim      a fleet of N devices in one process
DEV_OBJS := $(BUILD)/obj/device/device.o $(BUILD)/obj/device/run.o
$(BUILD)/obj/device/%.o: CPPFLAGS_ALL += -Idevice

$(BUILD)/test/test_device: $(DEV_OBJS)
$(BUILD)/obj/test/test_device.o: CPPFLAGS_ALL += -Idevice

PROGS += $(BUILD)/bin/fedmq-device $(BUILD)/bin/fedmq-sim
$(BUILD)/bin/fedmq-device: $(BUILD)/obj/device/fedmq_device.o $(DEV_OBJS) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) $(filter-out $(LIB),$^) $(LIB) -o $@ $(LIBS_ALL)
$(BUILD)/bin/fedmq-sim: $(BUILD)/obj/device/fedmq_sim.o $(DEV_OBJS) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS_ALL) $(filter-out $(LIB),$^) $(LIB) -o $@ $(LIBS_ALL)
