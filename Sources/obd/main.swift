print("obd")
