"""Browse an OPC UA server: ``python -m connectors.opcua URL`` (see ``connectors.opcua.source``)."""

import sys

from connectors.opcua.source import main

sys.exit(main())
