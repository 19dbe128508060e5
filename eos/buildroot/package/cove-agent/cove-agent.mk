################################################################################
#
# cove-agent
#
################################################################################

# The agent is built from the repository this external tree lives in
# (eos/buildroot/ -> ../..), so an image always matches its source commit.
COVE_AGENT_VERSION = local
COVE_AGENT_SITE = $(BR2_EXTERNAL_COVE_PATH)/../..
COVE_AGENT_SITE_METHOD = local
COVE_AGENT_LICENSE = Proprietary
COVE_AGENT_DEPENDENCIES = host-flatbuffers flatbuffers openssl libsodium spdlog fmt \
	json-for-modern-cpp cli11 tpm2-tss cove-caf cove-nats-c
COVE_AGENT_CONF_OPTS = -DCOVE_TESTS=OFF -DCOVE_BENCH=OFF -DCOVE_FUZZ=OFF \
	-DFLATC=$(HOST_DIR)/bin/flatc

# Only the agent: coved and the CLI run on the host, not in the image.
define COVE_AGENT_BUILD_CMDS
	$(TARGET_MAKE_ENV) $(BR2_CMAKE) --build $(COVE_AGENT_BUILDDIR) --target cove-agent
endef

define COVE_AGENT_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(COVE_AGENT_BUILDDIR)/bin/cove-agent $(TARGET_DIR)/usr/bin/cove-agent
endef

$(eval $(cmake-package))
