# The test guest (tests/guest): a freestanding PVH kernel, built with its own
# flags (never the host CFLAGS or sanitizers) into $(BUILD)/testguest.elf,
# intermediates under $(BUILD)/guest/.

GUEST_DIR := tests/guest
GUEST_CC ?= gcc
GUEST_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -O2 -g -MMD -MP \
	-ffreestanding -fno-builtin -fno-pic -fno-pie -mcmodel=small \
	-mno-red-zone -mgeneral-regs-only -fno-stack-protector \
	-fno-asynchronous-unwind-tables -fno-unwind-tables -fcf-protection=none \
	-fno-tree-loop-distribute-patterns -fno-omit-frame-pointer
GUEST_ASFLAGS := -Wall -Werror -MMD -MP -fno-pic -fno-pie
GUEST_LDFLAGS := -nostdlib -static -no-pie -Wl,-T,$(GUEST_DIR)/linker.ld \
	-Wl,--build-id=none -Wl,-z,max-page-size=4096 -Wl,-z,noexecstack

GUEST_C_SRCS := $(wildcard $(GUEST_DIR)/*.c)
GUEST_S_SRCS := $(wildcard $(GUEST_DIR)/*.S)
GUEST_OBJS := $(patsubst $(GUEST_DIR)/%.c,$(BUILD)/guest/%.o,$(GUEST_C_SRCS)) \
	$(patsubst $(GUEST_DIR)/%.S,$(BUILD)/guest/%.S.o,$(GUEST_S_SRCS))

$(BUILD)/guest/%.o: $(GUEST_DIR)/%.c
	@mkdir -p $(dir $@)
	$(GUEST_CC) $(GUEST_CFLAGS) -c $< -o $@

$(BUILD)/guest/%.S.o: $(GUEST_DIR)/%.S
	@mkdir -p $(dir $@)
	$(GUEST_CC) $(GUEST_ASFLAGS) -c $< -o $@

$(BUILD)/testguest.elf: $(GUEST_OBJS) $(GUEST_DIR)/linker.ld
	$(GUEST_CC) $(GUEST_LDFLAGS) -o $@ $(GUEST_OBJS)

-include $(wildcard $(BUILD)/guest/*.d)
