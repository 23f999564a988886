package lab.webapp;

import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.util.List;
import lab.common.BuildInfo;
import lab.common.Json;

/**
 * ecmc's customer-management list: {@code GET /ecmc/customers}.
 *
 * <p>Issue #9427: release v1 renders balances rounded to two decimals (12.345 shows as 12.35);
 * the fix renders the stored value exactly (12.345).
 */
public final class CustomersServlet extends JsonServlet {
    private static final long serialVersionUID = 1L;

    private record Customer(int id, String name, BigDecimal balance) {
    }

    private static final List<Customer> CUSTOMERS = List.of(
            new Customer(1, "Acme Trading", new BigDecimal("12.345")),
            new Customer(2, "Globex Ltd", new BigDecimal("1050.50")),
            new Customer(3, "Initech", new BigDecimal("0.125")),
            new Customer(4, "Umbrella Retail", new BigDecimal("-7.005")));

    static String render(BigDecimal balance) {
        BigDecimal shown = BuildInfo.BUG_9427_ROUNDING
                ? balance.setScale(2, RoundingMode.HALF_UP)
                : balance;
        return shown.toPlainString();
    }

    @Override
    protected void doGet(HttpServletRequest request, HttpServletResponse response)
            throws IOException {
        StringBuilder body = new StringBuilder("{\"customers\":[");
        for (int i = 0; i < CUSTOMERS.size(); i++) {
            Customer c = CUSTOMERS.get(i);
            body.append(i == 0 ? "" : ",")
                    .append("{\"id\":").append(c.id())
                    .append(",\"name\":").append(Json.string(c.name()))
                    .append(",\"balance\":").append(render(c.balance()))
                    .append('}');
        }
        send(response, body.append("]}").toString());
    }
}
