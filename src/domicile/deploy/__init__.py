"""Writing a deployment out: the starter configuration ``domicile init`` writes."""
