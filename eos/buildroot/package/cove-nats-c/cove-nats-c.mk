################################################################################
#
# cove-nats-c
#
################################################################################

COVE_NATS_C_VERSION = 3.4.1
COVE_NATS_C_SITE = $(call github,nats-io,nats.c,v$(COVE_NATS_C_VERSION))
COVE_NATS_C_LICENSE = Apache-2.0
COVE_NATS_C_LICENSE_FILES = LICENSE
COVE_NATS_C_INSTALL_STAGING = YES
COVE_NATS_C_DEPENDENCIES = openssl protobuf-c
COVE_NATS_C_CONF_OPTS = -DNATS_BUILD_EXAMPLES=OFF -DBUILD_TESTING=OFF -DNATS_BUILD_STREAMING=ON \
	-DNATS_BUILD_WITH_TLS=ON

$(eval $(cmake-package))
