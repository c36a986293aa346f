from twisted.application.service import ServiceMaker

meterd = ServiceMaker("meterd", "meterd.service", "Smart-meter head-end and billing server", "meterd")
