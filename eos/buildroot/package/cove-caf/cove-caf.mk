################################################################################
#
# cove-caf
#
################################################################################

COVE_CAF_VERSION = 0.17.6
COVE_CAF_SITE = $(call github,actor-framework,actor-framework,$(COVE_CAF_VERSION))
COVE_CAF_LICENSE = BSD-3-Clause or BSL-1.0
COVE_CAF_LICENSE_FILES = LICENSE LICENSE_ALTERNATIVE
COVE_CAF_INSTALL_STAGING = YES
COVE_CAF_CONF_OPTS = -DCAF_NO_EXAMPLES=ON -DCAF_NO_UNIT_TESTS=ON -DCAF_NO_TOOLS=ON \
	-DCAF_NO_OPENCL=ON -DCAF_NO_PYTHON=ON -DCAF_NO_OPENSSL=ON -DCAF_NO_IO=ON

$(eval $(cmake-package))
