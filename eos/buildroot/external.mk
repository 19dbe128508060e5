include $(sort $(wildcard $(BR2_EXTERNAL_COVE_PATH)/package/*/*.mk))
