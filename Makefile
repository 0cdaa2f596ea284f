.PHONY: up down status

# Local Kafka, TimescaleDB and Mosquitto on 127.0.0.1 (see deploy/README-services.md).
up:
	bash deploy/services.sh up

down:
	bash deploy/services.sh down

status:
	bash deploy/services.sh status
