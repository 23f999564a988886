package lab.common;

/** Just enough JSON writing for flat objects; no library needed. */
public final class Json {
    private Json() {
    }

    /** A JSON string literal, quotes included. */
    public static String string(String value) {
        StringBuilder out = new StringBuilder(value.length() + 2).append('"');
        for (int i = 0; i < value.length(); i++) {
            char c = value.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }

    /** The health document: {@code {"service":"ecsc","release":"20170220","status":"UP"}}. */
    public static String health(String service) {
        return "{\"service\":" + string(service) + ",\"release\":" + string(BuildInfo.RELEASE)
                + ",\"status\":\"UP\"}";
    }
}
